import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from portal.crypto import SecretUnreadable, decrypt_secret, encrypt_secret, reencrypt_secret


def test_round_trip_and_no_plaintext_in_the_ciphertext():
    ciphertext = encrypt_secret("gemini-secret-value")

    assert "gemini-secret" not in ciphertext
    assert decrypt_secret(ciphertext) == "gemini-secret-value"


def test_key_rotation_newest_first(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    ciphertext = encrypt_secret("s3cret")

    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    assert decrypt_secret(ciphertext) == "s3cret"  # old ciphertexts still open
    rotated = reencrypt_secret(ciphertext)

    settings.FIELD_ENCRYPTION_KEYS = [new]
    assert decrypt_secret(rotated) == "s3cret"
    with pytest.raises(SecretUnreadable):
        decrypt_secret(ciphertext)  # only the re-encrypted copy survives dropping the old key


def test_production_refuses_to_store_secrets_without_keys(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    settings.DEBUG = False

    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEYS must be set"):
        encrypt_secret("x")


def test_malformed_keys_are_a_configuration_error(settings):
    settings.FIELD_ENCRYPTION_KEYS = ["not-a-fernet-key"]

    with pytest.raises(ImproperlyConfigured, match="Fernet keys"):
        encrypt_secret("x")
