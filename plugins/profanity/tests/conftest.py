# chatkit's test fixtures (real servers, real clients), imported rather than named in
# pytest_plugins so that these tests run alone and from the repository root alike.
from chatkit.testing import chat_client, chat_server, chat_server_factory, text_client  # noqa: F401
