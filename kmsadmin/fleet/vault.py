"""Ansible Vault: decrypt ``!vault`` values and vault-encrypted files (formats 1.1 and 1.2, AES256).

The format is documented in Ansible's "Vault format" page:

* a header line ``$ANSIBLE_VAULT;1.1;AES256`` or ``$ANSIBLE_VAULT;1.2;AES256;<vault id>``;
* then hex text (in 80-column lines) that itself decodes to three lines: the hex salt, the hex
  HMAC-SHA256 and the hex ciphertext;
* keys: PBKDF2-HMAC-SHA256 of the password with the salt, 10000 iterations, 80 bytes: the first
  32 are the AES key, the next 32 the HMAC key, the last 16 the counter block;
* the ciphertext is AES-256-CTR of the PKCS#7-padded plain text; the HMAC covers the ciphertext.

Passwords come from ``--vault-password-file`` / ``--vault-id [label@]file`` / ``ANSIBLE_VAULT_PASSWORD_FILE``
(and ``ANSIBLE_VAULT_IDENTITY_LIST``). As in Ansible, a password file that is executable is run and its
output is the password; otherwise the file's text, stripped, is the password. A value is tried with the
secret whose label matches its vault id first, then with every other secret.

:func:`encrypt` writes the same formats (1.1 for the ``default`` label, 1.2 with the label otherwise), so
an export keeps a vaulted value vaulted with the password it was read with.

Nothing here prints or logs a password or a decrypted value.
"""

from __future__ import annotations

import binascii
import getpass
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kmsadmin.errors import InvalidInput

HEADER = "$ANSIBLE_VAULT"
#: a vault password file or a password script's output larger than this is refused
MAX_PASSWORD_BYTES = 64 * 1024
#: vault text larger than this is refused before decoding (a vaulted vars file is a few KB)
MAX_VAULT_TEXT = 16 * 1024 * 1024
#: seconds a vault password script may run
SCRIPT_TIMEOUT = 30.0
_ITERATIONS = 10000


class VaultError(InvalidInput):
    """A vault value or file that cannot be read: the message names where it came from."""

    def __init__(self, message: str) -> None:
        self.what = "vault"
        self.value = ""
        self.why = message
        ValueError.__init__(self, message)


@dataclass(frozen=True, slots=True)
class VaultSecret:
    """One vault password with its label (``default`` when none was given)."""

    label: str
    password: bytes
    source: str

    def __repr__(self) -> str:  # never show the password
        return f"VaultSecret(label={self.label!r}, source={self.source!r})"


@dataclass(frozen=True, slots=True)
class VaultSecrets:
    """The vault passwords of one run, in the order they were given."""

    secrets: tuple[VaultSecret, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def ordered_for(self, vault_id: str | None) -> list[VaultSecret]:
        """Secrets whose label matches ``vault_id`` first, then the others."""
        matching = [s for s in self.secrets if vault_id is not None and s.label == vault_id]
        return matching + [s for s in self.secrets if s not in matching]


def is_vaulted(text: str | bytes) -> bool:
    """Whether ``text`` starts with the vault header."""
    head = text[: len(HEADER)]
    return (head.decode("ascii", "replace") if isinstance(head, bytes) else head) == HEADER


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise VaultError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise VaultError(f"{what} {path} is larger than {limit} bytes")
    return data


def _password_from(path: Path, label: str) -> VaultSecret:
    what = "vault password file"
    if path.is_file() and os.access(path, os.X_OK):
        from kmsadmin.fleet.programs import ProgramFailed, run_program

        try:
            done = run_program([str(path)], timeout=SCRIPT_TIMEOUT, max_output=MAX_PASSWORD_BYTES)
        except ProgramFailed as exc:
            raise VaultError(f"vault password script {path}: {exc.reason}") from None
        if done.returncode != 0:
            raise VaultError(
                f"vault password script {path} exited {done.returncode}: {done.stderr[-300:] or 'no message'}"
            )
        data = done.stdout
    else:
        data = _read_bounded(path, MAX_PASSWORD_BYTES, what)
    if len(data) > MAX_PASSWORD_BYTES:
        raise VaultError(f"{what} {path} is larger than {MAX_PASSWORD_BYTES} bytes")
    password = data.strip()
    if not password:
        raise VaultError(f"{what} {path} is empty")
    return VaultSecret(label=label, password=password, source=str(path))


def _prompted(label: str) -> VaultSecret:
    if not sys.stdin.isatty():
        raise VaultError("--vault-id @prompt needs a terminal; use a vault password file")
    text = getpass.getpass(f"Vault password ({label}): ")
    if not text:
        raise VaultError("the vault password is empty")
    return VaultSecret(label=label, password=text.encode("utf-8"), source="prompt")


def load_secrets(
    password_files: Sequence[str | Path] = (),
    vault_ids: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> VaultSecrets:
    """Vault secrets from the CLI options and ``ANSIBLE_VAULT_IDENTITY_LIST`` / ``ANSIBLE_VAULT_PASSWORD_FILE``."""
    environ = os.environ if env is None else env
    # as ansible-core: ANSIBLE_VAULT_IDENTITY_LIST, then --vault-id, then --vault-password-file, then
    # ANSIBLE_VAULT_PASSWORD_FILE, all of them tried
    entries: list[tuple[str, str]] = []
    identities = [i.strip() for i in environ.get("ANSIBLE_VAULT_IDENTITY_LIST", "").split(",") if i.strip()]
    for item in [*identities, *vault_ids]:
        label, sep, source = item.partition("@")
        if not sep:
            label, source = "default", item
        if not source:
            raise VaultError(f"--vault-id {item!r}: use LABEL@FILE, FILE or LABEL@prompt")
        entries.append((label or "default", source))
    entries += [("default", str(p)) for p in password_files]
    if environ.get("ANSIBLE_VAULT_PASSWORD_FILE"):
        entries.append(("default", environ["ANSIBLE_VAULT_PASSWORD_FILE"]))
    entries = list(dict.fromkeys(entries))
    secrets = [
        _prompted(label) if source == "prompt" else _password_from(Path(source).expanduser(), label)
        for label, source in entries
    ]
    return VaultSecrets(tuple(secrets))


def _unhex(data: bytes) -> bytes:
    return binascii.unhexlify(data)


def _parse(text: str) -> tuple[str | None, bytes, bytes, bytes]:
    """(vault id, salt, hmac, ciphertext) of one vault envelope; ValueError naming what is wrong."""
    lines = text.strip().splitlines()
    if not lines:
        raise ValueError("empty vault text")
    header = [part.strip() for part in lines[0].split(";")]
    if header[0] != HEADER or len(header) < 3:
        raise ValueError("not vault text (no $ANSIBLE_VAULT header)")
    version, cipher = header[1], header[2]
    if version not in ("1.1", "1.2"):
        raise ValueError(f"vault format {version} is not supported (1.1 and 1.2 are)")
    if cipher != "AES256":
        raise ValueError(f"vault cipher {cipher} is not supported (AES256 is)")
    vault_id = header[3] if version == "1.2" and len(header) > 3 and header[3] else None
    body = "".join(line.strip() for line in lines[1:]).encode("ascii", "replace")
    try:
        inner = _unhex(body)
        salt_hex, hmac_hex, cipher_hex = inner.split(b"\n", 2)
        salt, ciphertext = _unhex(salt_hex), _unhex(cipher_hex)
        digest = _unhex(hmac_hex)
    except (ValueError, binascii.Error):
        raise ValueError("the vault text is truncated or corrupt (bad hex encoding)") from None
    if not salt or not ciphertext or len(ciphertext) % 16 or len(digest) != 32:
        raise ValueError("the vault text is truncated or corrupt")
    return vault_id, salt, digest, ciphertext


def _keys(password: bytes, salt: bytes) -> tuple[bytes, bytes, bytes]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    derived = PBKDF2HMAC(algorithm=hashes.SHA256(), length=80, salt=salt, iterations=_ITERATIONS).derive(
        password
    )
    return derived[:32], derived[32:64], derived[64:80]


def _decrypt_with(password: bytes, salt: bytes, digest: bytes, ciphertext: bytes) -> bytes | None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, hmac, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key, hmac_key, counter = _keys(password, salt)
    check = hmac.HMAC(hmac_key, hashes.SHA256())
    check.update(ciphertext)
    try:
        check.verify(digest)
    except InvalidSignature:
        return None
    decryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(decryptor.update(ciphertext) + decryptor.finalize()) + unpadder.finalize()
    except ValueError:
        return None


def decrypt(text: str, secrets: VaultSecrets, where: str) -> str:
    """The plain text of vault ``text``; :class:`VaultError` naming ``where`` when it cannot be read."""
    return decrypt_with(text, secrets, where)[0]


def decrypt_with(text: str, secrets: VaultSecrets, where: str) -> tuple[str, VaultSecret]:
    """(plain text, the secret that decrypted it) of vault ``text``; :class:`VaultError` naming ``where``."""
    if len(text) > MAX_VAULT_TEXT:
        raise VaultError(f"{where}: the vault text is larger than {MAX_VAULT_TEXT} bytes")
    try:
        vault_id, salt, digest, ciphertext = _parse(text)
    except ValueError as exc:
        raise VaultError(f"{where}: {exc}") from None
    if not secrets:
        raise VaultError(
            f"{where} is vault-encrypted: give --vault-password-file, --vault-id or ANSIBLE_VAULT_PASSWORD_FILE"
        )
    for secret in secrets.ordered_for(vault_id):
        plain = _decrypt_with(secret.password, salt, digest, ciphertext)
        if plain is not None:
            try:
                return plain.decode("utf-8"), secret
            except UnicodeDecodeError:
                raise VaultError(f"{where}: the decrypted text is not UTF-8") from None
    tried = ", ".join(s.label for s in secrets.secrets)
    raise VaultError(f"{where}: no vault password given decrypts it (tried: {tried}); wrong password?")


#: bytes of random salt per encrypted value (as ansible-core writes)
_SALT_BYTES = 32
#: width of the hex lines of the envelope (as ansible-core writes)
_LINE = 80


def encrypt(plain: str, secret: VaultSecret) -> str:
    """Vault text of ``plain`` under ``secret``: format 1.2 naming its label, 1.1 for ``default``.

    A fresh random salt per value (so equal values encrypt differently), keys and layout as
    :func:`decrypt_with` reads them; the result is what ``ansible-vault encrypt_string`` prints after
    ``!vault |``, without the indentation.
    """
    from cryptography.hazmat.primitives import hashes, hmac, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    salt = os.urandom(_SALT_BYTES)
    key, hmac_key, counter = _keys(secret.password, salt)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    signer = hmac.HMAC(hmac_key, hashes.SHA256())
    signer.update(ciphertext)
    inner = b"\n".join(binascii.hexlify(part) for part in (salt, signer.finalize(), ciphertext))
    body = binascii.hexlify(inner).decode("ascii")
    if secret.label == "default":
        header = f"{HEADER};1.1;AES256"
    else:
        if not secret.label or any(c in secret.label for c in ";\r\n") or not secret.label.isprintable():
            raise VaultError(f"vault id {secret.label!r} cannot name a vault value (no ';' or line breaks)")
        header = f"{HEADER};1.2;AES256;{secret.label}"
    return "\n".join([header, *(body[i : i + _LINE] for i in range(0, len(body), _LINE))]) + "\n"
