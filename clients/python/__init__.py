"""Python client of mailgate's ProviderService (`pip install mailgate`, then
`from mailgate.client import MailgateClient`).

    with MailgateClient("127.0.0.1:50051") as mg:
        for p in mg.list_providers():
            print(p.display_name, Provider.State.Name(p.state))
"""
from ._client import MailgateClient
from .errors import MailgateError, from_rpc_error

__all__ = ["MailgateClient", "MailgateError", "from_rpc_error"]
