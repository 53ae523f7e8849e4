"""Store mode as tests/integration/api runs it: the same fixtures."""

from tests.integration.api.conftest import dynamo_link, http, store_proxy

__all__ = ["dynamo_link", "http", "store_proxy"]
