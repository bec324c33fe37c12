// A Go client of mailgate built from the stubs scripts/gen-protos generates
// (build/gen/go, the module github.com/mailgate/mailgate/gen/go) and genproto's
// google/rpc error details. tests/test_interop_go.py compiles it with Debian's Go
// packages and runs it against a real `mailgate serve`; it prints one JSON object a
// line and exits non-zero on the first step that does not go as the contract says.
//
//	MAILGATE_ADDRESS=127.0.0.1:50051 MAILGATE_TOKEN=... interop-go
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	mailgatev1 "github.com/mailgate/mailgate/gen/go/mailgate/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func report(step string, fields map[string]interface{}) {
	fields["step"] = step
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

// details returns the ErrorInfo and the field violations of a rich error.
func details(err error) (*errdetails.ErrorInfo, []string) {
	st, _ := status.FromError(err)
	var info *errdetails.ErrorInfo
	var fields []string
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if info == nil {
		fail("no google.rpc.ErrorInfo in %v", err)
	}
	return info, fields
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, os.Getenv("MAILGATE_ADDRESS"), grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail("dial: %v", err)
	}
	defer conn.Close()
	providers := mailgatev1.NewProviderServiceClient(conn)

	// No credentials: UNAUTHENTICATED.
	_, err = providers.ListProviders(ctx, &mailgatev1.ListProvidersRequest{})
	if status.Code(err) != codes.Unauthenticated {
		fail("UNAUTHENTICATED expected, got %v", err)
	}
	info, _ := details(err)
	report("no_token", map[string]interface{}{"code": status.Code(err).String(), "reason": info.GetReason()})

	admin := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+os.Getenv("MAILGATE_TOKEN"))
	drivers, err := providers.ListDrivers(admin, &mailgatev1.ListDriversRequest{})
	if err != nil {
		fail("ListDrivers: %v", err)
	}
	var types []string
	for _, d := range drivers.GetDrivers() {
		types = append(types, d.GetType())
	}
	report("drivers", map[string]interface{}{"types": types})

	// A provider with no account and no settings: INVALID_ARGUMENT, each field named.
	_, err = providers.CreateProvider(admin, &mailgatev1.CreateProviderRequest{Provider: &mailgatev1.Provider{
		DisplayName: "Go", Type: "smtp_imap",
		Settings: &mailgatev1.Provider_SmtpImap{SmtpImap: &mailgatev1.SmtpImapSettings{}},
	}})
	if status.Code(err) != codes.InvalidArgument {
		fail("INVALID_ARGUMENT expected, got %v", err)
	}
	info, fields := details(err)
	report("invalid", map[string]interface{}{"code": status.Code(err).String(), "reason": info.GetReason(),
		"domain": info.GetDomain(), "fields": fields})
}
