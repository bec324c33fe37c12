// A TypeScript client of mailgate built only from the stubs scripts/gen-protos generates
// (build/gen/ts, protoc-gen-es) and Connect's gRPC transport for Node. It runs against a
// real `mailgate serve`: tests/test_interop_js.py starts the servers, writes the JSON file
// named on the command line and checks what this prints, one JSON object a line.
//
//   node interop/dist/interop/interop.js CONFIG.json
//
// CONFIG: {address, token, account, password, wrongPassword, caPem, smtp: {host, port},
// imap: {host, port}, campaign, otherCampaign, to}. Exits non-zero on the first step
// that does not go as the contract says.

import { readFileSync } from "node:fs";
import { create, fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { ErrorInfoSchema } from "../build/gen/ts/google/rpc/error_details_pb.js";
import { StatusSchema } from "../build/gen/ts/google/rpc/status_pb.js";
import { InboundMessage_State, InboundService, type StreamInboundMailRequest,
  StreamInboundMailRequestSchema } from "../build/gen/ts/mailgate/v1/inbound_service_pb.js";
import { MailService } from "../build/gen/ts/mailgate/v1/mail_service_pb.js";
import { Provider_State, ProviderSchema, Security } from "../build/gen/ts/mailgate/v1/provider_pb.js";
import { ProviderService } from "../build/gen/ts/mailgate/v1/provider_service_pb.js";
import { TokenService } from "../build/gen/ts/mailgate/v1/token_service_pb.js";

interface Config {
  address: string;
  token: string;
  account: string;
  password: string;
  wrongPassword: string;
  caPem: string;
  smtp: { host: string; port: number };
  imap: { host: string; port: number };
  campaign: string;
  otherCampaign: string;
  to: string;
}

const config = JSON.parse(readFileSync(process.argv[2], "utf8")) as Config;
const timeoutMs = 15_000;

function report(step: string, fields: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ step, ...fields }));
}

function check(ok: boolean, what: string): asserts ok {
  if (!ok) throw new Error(`check failed: ${what}`);
}

function transport(token?: string) {
  const bearer: Interceptor = (next) => async (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return await next(req);
  };
  return createGrpcTransport({ baseUrl: `http://${config.address}`, interceptors: [bearer] });
}

// The google.rpc.Status in the `grpc-status-details-bin` trailer, decoded with the
// generated google/rpc stubs: what any gRPC client reads, whatever its library.
function errorInfo(err: ConnectError) {
  const bin = err.metadata.get("grpc-status-details-bin");
  check(bin !== null, "the error carries grpc-status-details-bin");
  const status = fromBinary(StatusSchema, Buffer.from(bin!, "base64"));
  const infos = status.details.map((any) => anyUnpack(any, ErrorInfoSchema)).filter((x) => x !== undefined);
  check(infos.length === 1, "exactly one google.rpc.ErrorInfo in the details");
  return { status, info: infos[0]! };
}

async function expectError(code: Code, call: () => Promise<unknown>): Promise<ConnectError> {
  try {
    await call();
  } catch (e) {
    const err = ConnectError.from(e);
    check(err.code === code, `${Code[code]} expected, got ${Code[err.code]}: ${err.rawMessage}`);
    return err;
  }
  throw new Error(`check failed: ${Code[code]} expected, the call succeeded`);
}

// StreamInboundMail's requests: the first names the campaign, later ones carry acks.
class Requests implements AsyncIterable<StreamInboundMailRequest> {
  private queue: (StreamInboundMailRequest | null)[] = [];
  private wake: (() => void) | null = null;

  push(request: StreamInboundMailRequest | null): void {
    this.queue.push(request);
    this.wake?.();
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      while (this.queue.length === 0) await new Promise<void>((resolve) => (this.wake = resolve));
      const next = this.queue.shift()!;
      if (next === null) return;
      yield next;
    }
  }
}

function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function main(): Promise<void> {
  const admin = transport(config.token);
  const providers = createClient(ProviderService, admin);
  const mail = createClient(MailService, admin);
  const inbound = createClient(InboundService, admin);
  const tokens = createClient(TokenService, admin);

  // No credentials: UNAUTHENTICATED.
  const anonymous = createClient(ProviderService, transport());
  const unauthenticated = await expectError(Code.Unauthenticated,
    () => anonymous.listProviders({}, { timeoutMs }));
  report("no_token", { code: Code[unauthenticated.code], reason: errorInfo(unauthenticated).info.reason });

  const provider = (password: string) => create(ProviderSchema, {
    displayName: "Interop", type: "smtp_imap", account: config.account,
    receiveEmails: true, campaign: config.campaign,
    settings: { case: "smtpImap", value: {  // the oneof `settings`
      password, caCertificatesPem: config.caPem,
      smtp: { host: config.smtp.host, port: config.smtp.port, security: Security.STARTTLS },
      inbound: { host: config.imap.host, port: config.imap.port, security: Security.TLS },
    } },
  });

  // The wrong password: nothing is created, and the details say why.
  const refused = await expectError(Code.FailedPrecondition,
    () => providers.createProvider({ provider: provider(config.wrongPassword) }, { timeoutMs }));
  const { status, info } = errorInfo(refused);
  check(!refused.rawMessage.includes(config.wrongPassword), "the password is not in the message");
  report("wrong_password", {
    code: Code[refused.code], statusCode: status.code, reason: info.reason, domain: info.domain,
    failedChecks: info.metadata["failed_checks"], message: status.message,
  });

  // The right one: GREEN, and the password is never returned.
  const created = await providers.createProvider({ provider: provider(config.password) }, { timeoutMs });
  check(created.state === Provider_State.GREEN, `GREEN, got ${Provider_State[created.state]}`);
  check(created.settings.case === "smtpImap", "smtp_imap settings");
  const settings = created.settings.value;
  check(settings.password === "" && settings.passwordSet, "password_set, and no password");
  report("created", { name: created.name, state: Provider_State[created.state], campaign: created.campaign,
                      passwordSet: settings.passwordSet });

  const listed = await providers.listProviders({}, { timeoutMs });
  report("listed", { names: listed.providers.map((p) => p.name) });

  // Stream the campaign first, then send: the test's SMTP server hands what it accepts
  // to the Dovecot mailbox the provider watches, so the mail comes back as inbound mail.
  const requests = new Requests();
  requests.push(create(StreamInboundMailRequestSchema, {
    campaign: config.campaign, consumer: "interop-ts", maxInFlight: 5, ackDeadlineSeconds: 30 }));
  const abort = new AbortController();
  const stream = inbound.streamInboundMail(requests, { signal: abort.signal })[Symbol.asyncIterator]();

  const sent = await mail.sendEmail({
    provider: created.name, to: [config.to], subject: "interop from TypeScript",
    textBody: "Hello from the generated stubs.", requestId: "interop-ts-1" }, { timeoutMs });
  report("sent", { name: sent.name, messageId: sent.messageId, provider: sent.provider });

  const first = await within(timeoutMs, "a delivery on the stream", stream.next());
  check(!first.done && first.value.receivedMessages.length === 1, "one delivery");
  const [received] = first.value.receivedMessages;
  const m = received.message!;
  report("received", { subject: m.subject, messageId: m.messageId, campaign: m.campaign, provider: m.provider,
                       from: m.from, textBody: m.textBody.trim() });
  requests.push(create(StreamInboundMailRequestSchema, { ackIds: [received.ackId] }));
  let state = InboundMessage_State.UNSPECIFIED;
  for (const start = Date.now(); Date.now() - start < timeoutMs;) {  // acks on the stream are committed soon after
    state = (await inbound.getInboundMessage({ name: m.name }, { timeoutMs })).state;
    if (state === InboundMessage_State.ACKNOWLEDGED) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  report("acked", { name: m.name, state: InboundMessage_State[state] });
  requests.push(null);
  abort.abort();

  // A consume-only token for another campaign: it may neither send nor stream this one.
  const made = await tokens.createToken({ token: {
    displayName: "interop consumer", permissions: ["inbound.consume"], campaigns: [config.otherCampaign] } },
    { timeoutMs });
  const consumer = transport(made.secret);
  const sendDenied = await expectError(Code.PermissionDenied, () => createClient(MailService, consumer).sendEmail({
    provider: created.name, to: [config.to], subject: "not allowed", textBody: "x" }, { timeoutMs }));
  const consumerRequests = new Requests();
  consumerRequests.push(create(StreamInboundMailRequestSchema, { campaign: config.campaign, consumer: "stranger" }));
  const streamDenied = await expectError(Code.PermissionDenied, async () => {
    for await (const _ of createClient(InboundService, consumer).streamInboundMail(consumerRequests, { timeoutMs })) {
      break;
    }
  });
  consumerRequests.push(null);
  report("scoped_token", {
    token: made.token!.name,
    send: { code: Code[sendDenied.code], ...pick(errorInfo(sendDenied).info) },
    stream: { code: Code[streamDenied.code], ...pick(errorInfo(streamDenied).info) },
  });
  report("done");
}

function pick(info: { reason: string; metadata: Record<string, string> }) {
  return { reason: info.reason, permission: info.metadata["permission"] };
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});
