from tests.fakes import apns_key, fake_apns

__all__ = ["apns_key", "fake_apns"]
