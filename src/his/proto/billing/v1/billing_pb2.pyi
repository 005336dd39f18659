from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetTermsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PayerPlan(_message.Message):
    __slots__ = ("code", "title", "currency")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    code: str
    title: str
    currency: str
    def __init__(self, code: _Optional[str] = ..., title: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...

class Terms(_message.Message):
    __slots__ = ("payers", "currencies")
    PAYERS_FIELD_NUMBER: _ClassVar[int]
    CURRENCIES_FIELD_NUMBER: _ClassVar[int]
    payers: _containers.RepeatedCompositeFieldContainer[PayerPlan]
    currencies: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, payers: _Optional[_Iterable[_Union[PayerPlan, _Mapping]]] = ..., currencies: _Optional[_Iterable[str]] = ...) -> None: ...
