"""PARL's `parl.remote.exceptions` (see `parl_rs.exceptions`, where they are defined)."""

from parl_rs.exceptions import (
    ActorDiedError,
    AuthenticationError,
    ConnectError,
    FutureFunctionError,
    FutureGetRepeatedlyError,
    FutureObjectEmpty,
    MessageTooLargeError,
    ProtocolError,
    RemoteAttributeError,
    RemoteDeserializeError,
    RemoteError,
    RemoteSerializeError,
    ResourceError,
)

__all__ = [
    "ActorDiedError",
    "AuthenticationError",
    "ConnectError",
    "FutureFunctionError",
    "FutureGetRepeatedlyError",
    "FutureObjectEmpty",
    "MessageTooLargeError",
    "ProtocolError",
    "RemoteAttributeError",
    "RemoteDeserializeError",
    "RemoteError",
    "RemoteSerializeError",
    "ResourceError",
]
