"""The object store client: a thin, typed layer over MinIO's async S3 SDK (miniopy-async, on
aiohttp), which works with any S3-compatible server.

(Not aiobotocore: botocore pins python-dateutil<3, which kubernetes>=37 cannot share.)
Errors surface as :class:`StoreError` (with the S3 error code when there is one) and
:class:`ObjectNotFound`; nothing from the SDK or aiohttp leaks to callers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlparse

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StoreConfig",
    "StoreCredentials",
    "StoreError",
    "parse_s3_uri",
]

ENV_ENDPOINT: Final = "TOKENFLEET_S3_ENDPOINT"
ENV_REGION: Final = "TOKENFLEET_S3_REGION"
ENV_ACCESS_KEY: Final = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY: Final = "AWS_SECRET_ACCESS_KEY"
ENV_SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"
DEFAULT_REGION: Final = "us-east-1"
CHUNK_BYTES: Final = 1 << 20

# Secret keys accepted for each credential (the first present wins).
_ACCESS_KEYS: Final = ("accessKeyId", "access-key-id", ENV_ACCESS_KEY)
_SECRET_KEYS: Final = ("secretAccessKey", "secret-access-key", ENV_SECRET_KEY)
_TOKEN_KEYS: Final = ("sessionToken", "session-token", ENV_SESSION_TOKEN)
_ENDPOINT_KEYS: Final = ("endpoint", ENV_ENDPOINT)
_REGION_KEYS: Final = ("region", ENV_REGION)


class StoreError(Exception):
    """A request to the object store failed. ``code`` is the S3 error code, if any."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ObjectNotFound(StoreError):
    """The bucket or key does not exist."""


@dataclass(frozen=True, slots=True)
class StoreCredentials:
    """An access key pair (plus an optional session token)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"StoreCredentials(access_key_id={self.access_key_id!r}, secret_access_key=***)"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the store is and how to authenticate. ``endpoint_url`` ``None`` means AWS itself."""

    endpoint_url: str | None
    credentials: StoreCredentials | None
    region: str = DEFAULT_REGION

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StoreConfig:
        """``$TOKENFLEET_S3_ENDPOINT``, ``$TOKENFLEET_S3_REGION``, ``$AWS_ACCESS_KEY_ID``,
        ``$AWS_SECRET_ACCESS_KEY`` (both or neither), ``$AWS_SESSION_TOKEN``."""
        return cls._from_fields(dict(os.environ if env is None else env), "environment")

    @classmethod
    def from_secret_data(
        cls, data: Mapping[str, str], *, endpoint_url: str | None = None, name: str = "Secret"
    ) -> StoreConfig:
        """From a Kubernetes Secret's ``data`` (base64 values, as the API returns them): keys
        ``accessKeyId``/``secretAccessKey`` (or ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``),
        optional ``sessionToken``, ``endpoint`` and ``region``. ``endpoint_url`` wins over the
        Secret's ``endpoint``."""
        decoded: dict[str, str] = {}
        for key, value in data.items():
            try:
                decoded[key] = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as error:
                raise ValueError(f"{name}: data.{key} is not base64 UTF-8 text") from error
        config = cls._from_fields(decoded, name)
        if endpoint_url is not None:
            return StoreConfig(endpoint_url, config.credentials, config.region)
        return config

    @classmethod
    def _from_fields(cls, fields: Mapping[str, str], origin: str) -> StoreConfig:
        def first(keys: tuple[str, ...]) -> tuple[str | None, str]:
            for key in keys:
                value = fields.get(key)
                if value:
                    return value.strip(), key
            return None, keys[0]

        access, access_name = first(_ACCESS_KEYS)
        secret, secret_name = first(_SECRET_KEYS)
        if (access is None) != (secret is None):
            missing = access_name if access is None else secret_name
            raise ValueError(f"{origin}: {missing} is required together with the other key")
        token, _ = first(_TOKEN_KEYS)
        endpoint, endpoint_name = first(_ENDPOINT_KEYS)
        if endpoint is not None:
            parsed = urlparse(endpoint)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"{origin}: {endpoint_name} must be an http(s) URL: {endpoint!r}")
        region, _ = first(_REGION_KEYS)
        credentials = None
        if access is not None and secret is not None:
            credentials = StoreCredentials(access, secret, token)
        return cls(endpoint, credentials, region or DEFAULT_REGION)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object: key, size in bytes, ETag (quotes stripped), last modification."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")`` (no leading/trailing
    slash; the prefix may be empty). Raises ``ValueError`` naming the problem."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket = parsed.netloc
    if not bucket or not (3 <= len(bucket) <= 63):
        raise ValueError(f"s3 URI {uri!r} needs a bucket name of 3-63 characters")
    if parsed.query or parsed.fragment:
        raise ValueError(f"s3 URI {uri!r} must not have a query or fragment")
    return bucket, parsed.path.strip("/")


_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})


def _wrap(error: BaseException, what: str) -> StoreError:
    code = getattr(error, "code", None)
    code = str(code) if isinstance(code, str) and code else None
    if code in _NOT_FOUND:
        return ObjectNotFound(f"{what}: not found ({code})", code)
    return StoreError(f"{what}: {type(error).__name__}: {error}", code)


def _errors() -> tuple[type[BaseException], ...]:
    import aiohttp
    from miniopy_async.error import MinioException

    return (MinioException, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError)


class ObjectStore:
    """An async S3 client. Use as ``async with ObjectStore(config) as store: ...``."""

    def __init__(
        self, config: StoreConfig, *, connect_timeout_s: float = 10.0, read_timeout_s: float = 60.0
    ) -> None:
        self.config = config
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._client: Any = None
        self._session: Any = None

    async def __aenter__(self) -> ObjectStore:
        import aiohttp
        from miniopy_async.api import Minio

        url = urlparse(self.config.endpoint_url or "https://s3.amazonaws.com")
        creds = self.config.credentials
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                connect=self._connect_timeout_s, sock_read=self._read_timeout_s
            )
        )
        self._client = Minio(
            url.netloc,
            access_key=creds.access_key_id if creds else None,
            secret_key=creds.secret_access_key if creds else None,
            session_token=creds.session_token if creds else None,
            secure=url.scheme == "https",
            region=self.config.region,
            session=self._session,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        self._client, self._session = None, None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("ObjectStore used outside `async with`")
        return self._client

    async def create_bucket(self, bucket: str) -> None:
        """Create ``bucket``; an existing bucket owned by the caller is fine."""
        try:
            await self.client.make_bucket(bucket)
        except _errors() as error:
            if getattr(error, "code", None) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            raise _wrap(error, f"create bucket {bucket}") from error

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's metadata, or ``None`` when it does not exist."""
        try:
            obj = await self.client.stat_object(bucket, key)
        except _errors() as error:
            wrapped = _wrap(error, f"head s3://{bucket}/{key}")
            if isinstance(wrapped, ObjectNotFound):
                return None
            raise wrapped from error
        return ObjectInfo(
            key, int(obj.size or 0), str(obj.etag or "").strip('"'), obj.last_modified
        )

    async def put(self, bucket: str, key: str, data: bytes) -> str:
        """Write ``data`` to ``key``; returns the ETag."""
        try:
            r = await self.client.put_object(bucket, key, io.BytesIO(data), len(data))
        except _errors() as error:
            raise _wrap(error, f"put s3://{bucket}/{key}") from error
        return str(r.etag or "").strip('"')

    async def get(self, bucket: str, key: str) -> bytes:
        """The whole object."""
        return b"".join([chunk async for chunk in self.stream(bucket, key)])

    async def get_range(self, bucket: str, key: str, start: int, end: int | None = None) -> bytes:
        """Bytes ``start`` to ``end`` inclusive (to the end of the object when ``end`` is None)."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range {start}-{end}")
        return b"".join([chunk async for chunk in self.stream(bucket, key, start, end)])

    async def stream(
        self,
        bucket: str,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> AsyncIterator[bytes]:
        """The object's bytes from ``start`` (a range GET when ``start`` > 0 or ``end`` is
        set), in chunks of at most ``chunk_bytes``."""
        what = f"get s3://{bucket}/{key}"
        length = 0 if end is None else end - start + 1
        try:
            response = await self.client.get_object(bucket, key, offset=start, length=length)
        except _errors() as error:
            raise _wrap(error, what) from error
        try:
            while True:
                try:
                    chunk = await response.content.read(chunk_bytes)
                except _errors() as error:
                    raise _wrap(error, what) from error
                if not chunk:
                    return
                yield bytes(chunk)
        finally:
            response.close()

    async def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix`` (all pages, recursively), sorted by key."""
        out: list[ObjectInfo] = []
        try:
            async for obj in self.client.list_objects(bucket, prefix=prefix, recursive=True):
                if obj.is_dir or not obj.object_name:
                    continue
                out.append(
                    ObjectInfo(
                        str(obj.object_name),
                        int(obj.size or 0),
                        str(obj.etag or "").strip('"'),
                        obj.last_modified,
                    )
                )
        except _errors() as error:
            raise _wrap(error, f"list s3://{bucket}/{prefix}") from error
        return sorted(out, key=lambda o: o.key)

    async def delete(self, bucket: str, key: str) -> None:
        """Delete ``key`` (a missing key is not an error, as in S3)."""
        try:
            await self.client.remove_object(bucket, key)
        except _errors() as error:
            raise _wrap(error, f"delete s3://{bucket}/{key}") from error
