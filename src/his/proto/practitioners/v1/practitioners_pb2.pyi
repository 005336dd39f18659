import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetWorkingTimeRequest(_message.Message):
    __slots__ = ("practitioner_id", "start", "end")
    PRACTITIONER_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    practitioner_id: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, practitioner_id: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WorkingTime(_message.Message):
    __slots__ = ("practitioner_id", "intervals")
    PRACTITIONER_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVALS_FIELD_NUMBER: _ClassVar[int]
    practitioner_id: str
    intervals: _containers.RepeatedCompositeFieldContainer[Interval]
    def __init__(self, practitioner_id: _Optional[str] = ..., intervals: _Optional[_Iterable[_Union[Interval, _Mapping]]] = ...) -> None: ...

class GetPractitionerRequest(_message.Message):
    __slots__ = ("practitioner_id",)
    PRACTITIONER_ID_FIELD_NUMBER: _ClassVar[int]
    practitioner_id: str
    def __init__(self, practitioner_id: _Optional[str] = ...) -> None: ...

class Practitioner(_message.Message):
    __slots__ = ("practitioner_id", "specialty", "user_id")
    PRACTITIONER_ID_FIELD_NUMBER: _ClassVar[int]
    SPECIALTY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    practitioner_id: str
    specialty: str
    user_id: str
    def __init__(self, practitioner_id: _Optional[str] = ..., specialty: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListPractitionersRequest(_message.Message):
    __slots__ = ("specialty",)
    SPECIALTY_FIELD_NUMBER: _ClassVar[int]
    specialty: str
    def __init__(self, specialty: _Optional[str] = ...) -> None: ...

class ListedPractitioner(_message.Message):
    __slots__ = ("practitioner_id", "full_name", "specialty")
    PRACTITIONER_ID_FIELD_NUMBER: _ClassVar[int]
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    SPECIALTY_FIELD_NUMBER: _ClassVar[int]
    practitioner_id: str
    full_name: str
    specialty: str
    def __init__(self, practitioner_id: _Optional[str] = ..., full_name: _Optional[str] = ..., specialty: _Optional[str] = ...) -> None: ...

class PractitionerList(_message.Message):
    __slots__ = ("practitioners", "specialties")
    PRACTITIONERS_FIELD_NUMBER: _ClassVar[int]
    SPECIALTIES_FIELD_NUMBER: _ClassVar[int]
    practitioners: _containers.RepeatedCompositeFieldContainer[ListedPractitioner]
    specialties: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, practitioners: _Optional[_Iterable[_Union[ListedPractitioner, _Mapping]]] = ..., specialties: _Optional[_Iterable[str]] = ...) -> None: ...
