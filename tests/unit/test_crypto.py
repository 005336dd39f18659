"""Field encryption: round trip, tamper and row-swap detection, key rotation. No IO."""

from __future__ import annotations

import os

import pytest

from his.kernel.crypto import DecryptionError, FieldCipher, new_key_text, parse_key


def test_round_trip_and_the_ciphertext_hides_the_text() -> None:
    c = FieldCipher([os.urandom(32)])
    blob = c.encrypt("Penicillin allergy: anaphylaxis 2019", b"patient-1|entry-1")
    assert b"Penicillin" not in blob
    assert c.decrypt(blob, b"patient-1|entry-1") == "Penicillin allergy: anaphylaxis 2019"
    assert c.encrypt("same", b"a") != c.encrypt("same", b"a")  # fresh nonce each time


def test_altered_or_moved_ciphertexts_do_not_decrypt() -> None:
    c = FieldCipher([os.urandom(32)])
    blob = c.encrypt("note", b"patient-1|entry-1")
    with pytest.raises(DecryptionError):
        c.decrypt(blob, b"patient-2|entry-1")  # copied into another patient's row
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError):
        c.decrypt(tampered, b"patient-1|entry-1")
    with pytest.raises(DecryptionError):
        c.decrypt(b"short", b"x")


def test_a_new_key_encrypts_and_the_old_one_still_decrypts() -> None:
    old, new = os.urandom(32), os.urandom(32)
    blob = FieldCipher([old]).encrypt("old note", b"r")
    rotated = FieldCipher([new, old])
    assert rotated.decrypt(blob, b"r") == "old note"
    assert FieldCipher([new]).decrypt(rotated.encrypt("new", b"r"), b"r") == "new"
    with pytest.raises(DecryptionError, match="not configured"):
        FieldCipher([new]).decrypt(blob, b"r")


def test_keys_from_settings_are_checked() -> None:
    assert len(parse_key(new_key_text())) == 32
    for bad in ("", "not base64!!", "c2hvcnQ"):
        with pytest.raises(ValueError):
            parse_key(bad)
