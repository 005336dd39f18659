from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Sex(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEX_UNSPECIFIED: _ClassVar[Sex]
    SEX_FEMALE: _ClassVar[Sex]
    SEX_MALE: _ClassVar[Sex]
    SEX_OTHER: _ClassVar[Sex]
    SEX_UNKNOWN: _ClassVar[Sex]
SEX_UNSPECIFIED: Sex
SEX_FEMALE: Sex
SEX_MALE: Sex
SEX_OTHER: Sex
SEX_UNKNOWN: Sex

class GetInvitationRequest(_message.Message):
    __slots__ = ("invitation_id",)
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    invitation_id: str
    def __init__(self, invitation_id: _Optional[str] = ...) -> None: ...

class Invitation(_message.Message):
    __slots__ = ("invitation_id", "patient_id", "channel", "code", "expires_at")
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    invitation_id: str
    patient_id: str
    channel: str
    code: str
    expires_at: str
    def __init__(self, invitation_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., channel: _Optional[str] = ..., code: _Optional[str] = ..., expires_at: _Optional[str] = ...) -> None: ...

class GetCareBasisRequest(_message.Message):
    __slots__ = ("patient_id", "user_id")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    user_id: str
    def __init__(self, patient_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class CareBasis(_message.Message):
    __slots__ = ("in_care", "emergency", "owner")
    IN_CARE_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    in_care: bool
    emergency: bool
    owner: bool
    def __init__(self, in_care: _Optional[bool] = ..., emergency: _Optional[bool] = ..., owner: _Optional[bool] = ...) -> None: ...

class GetPatientRequest(_message.Message):
    __slots__ = ("patient_id",)
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    def __init__(self, patient_id: _Optional[str] = ...) -> None: ...

class GetContactDetailsRequest(_message.Message):
    __slots__ = ("patient_id",)
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    def __init__(self, patient_id: _Optional[str] = ...) -> None: ...

class Coverage(_message.Message):
    __slots__ = ("payer", "member_id")
    PAYER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    payer: str
    member_id: str
    def __init__(self, payer: _Optional[str] = ..., member_id: _Optional[str] = ...) -> None: ...

class Patient(_message.Message):
    __slots__ = ("id", "mrn", "given_name", "family_name", "birth_date", "sex", "user_id", "coverage")
    ID_FIELD_NUMBER: _ClassVar[int]
    MRN_FIELD_NUMBER: _ClassVar[int]
    GIVEN_NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_NAME_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    mrn: str
    given_name: str
    family_name: str
    birth_date: str
    sex: Sex
    user_id: str
    coverage: Coverage
    def __init__(self, id: _Optional[str] = ..., mrn: _Optional[str] = ..., given_name: _Optional[str] = ..., family_name: _Optional[str] = ..., birth_date: _Optional[str] = ..., sex: _Optional[_Union[Sex, str]] = ..., user_id: _Optional[str] = ..., coverage: _Optional[_Union[Coverage, _Mapping]] = ...) -> None: ...

class ContactDetails(_message.Message):
    __slots__ = ("patient_id", "email", "phone", "preferred_name")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_NAME_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    email: str
    phone: str
    preferred_name: str
    def __init__(self, patient_id: _Optional[str] = ..., email: _Optional[str] = ..., phone: _Optional[str] = ..., preferred_name: _Optional[str] = ...) -> None: ...
