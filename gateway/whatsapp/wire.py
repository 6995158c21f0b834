"""The WhatsApp Business Cloud API wire format, as typed pydantic models.

Outbound: ``POST /{version}/{phone_number_id}/messages`` bodies (template, text,
interactive button/list) and its answers (success, Graph error). Inbound: the webhook,
one model per ``field``: ``messages`` (``statuses`` and customer ``messages``), the
account's management fields (template status, quality and category, phone number
quality, account updates), and any other field, kept as it came. Field names follow
Meta's reference exactly; models for what we *receive* ignore unknown fields, since
Meta adds fields without notice, while models for what we *send* forbid them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

TEXT_BODY_MAX = 4096
BUTTON_TITLE_MAX = 20
LIST_ROW_TITLE_MAX = 24
LIST_ROW_DESCRIPTION_MAX = 72
LIST_ROWS_MAX = 10
CALLBACK_DATA_MAX = 512


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- outbound message bodies -------------------------------------------------------------


class TemplateLanguage(_Out):
    code: str
    policy: Literal["deterministic"] = "deterministic"


class TextParameter(_Out):
    type: Literal["text"] = "text"
    text: str


class PayloadParameter(_Out):
    type: Literal["payload"] = "payload"
    payload: str = Field(..., max_length=256)


class BodyComponent(_Out):
    type: Literal["body"] = "body"
    parameters: list[TextParameter]


class QuickReplyComponent(_Out):
    type: Literal["button"] = "button"
    sub_type: Literal["quick_reply"] = "quick_reply"
    index: str = Field(..., pattern=r"^\d+$", description="Button position in the template, as a string.")
    parameters: list[PayloadParameter] = Field(..., min_length=1, max_length=1)


TemplateComponent = Annotated[BodyComponent | QuickReplyComponent, Field(discriminator="type")]


class Template(_Out):
    name: str
    language: TemplateLanguage
    components: list[TemplateComponent] = Field(default_factory=list)


class Text(_Out):
    body: str = Field(..., min_length=1, max_length=TEXT_BODY_MAX)
    preview_url: bool = False


class InteractiveText(_Out):
    text: str = Field(..., min_length=1, max_length=1024)


class HeaderText(_Out):
    type: Literal["text"] = "text"
    text: str = Field(..., max_length=60)


class FooterText(_Out):
    text: str = Field(..., max_length=60)


class ReplyButtonReply(_Out):
    id: str = Field(..., min_length=1, max_length=256)
    title: str = Field(..., min_length=1, max_length=BUTTON_TITLE_MAX)


class ReplyButton(_Out):
    type: Literal["reply"] = "reply"
    reply: ReplyButtonReply


class ButtonAction(_Out):
    buttons: list[ReplyButton] = Field(..., min_length=1, max_length=3)


class ListRow(_Out):
    id: str = Field(..., min_length=1, max_length=200)
    title: str = Field(..., min_length=1, max_length=LIST_ROW_TITLE_MAX)
    description: str | None = Field(None, max_length=LIST_ROW_DESCRIPTION_MAX)


class ListSection(_Out):
    title: str | None = Field(None, max_length=24)
    rows: list[ListRow] = Field(..., min_length=1, max_length=LIST_ROWS_MAX)


class ListAction(_Out):
    button: str = Field(..., min_length=1, max_length=BUTTON_TITLE_MAX)
    sections: list[ListSection] = Field(..., min_length=1, max_length=10)


class ButtonInteractive(_Out):
    type: Literal["button"] = "button"
    header: HeaderText | None = None
    body: InteractiveText
    footer: FooterText | None = None
    action: ButtonAction


class ListInteractive(_Out):
    type: Literal["list"] = "list"
    header: HeaderText | None = None
    body: InteractiveText
    footer: FooterText | None = None
    action: ListAction


Interactive = Annotated[ButtonInteractive | ListInteractive, Field(discriminator="type")]


class _MessageBase(_Out):
    messaging_product: Literal["whatsapp"] = "whatsapp"
    recipient_type: Literal["individual"] = "individual"
    to: str = Field(..., description="Customer number, E.164 (the API accepts it with or without '+').")
    # Echoed back in this message's status webhooks: we put our idempotency key here, which
    # is how an attempt whose HTTP answer was lost is recognised (see outbox.py).
    biz_opaque_callback_data: str | None = Field(None, max_length=CALLBACK_DATA_MAX)


class TemplateMessage(_MessageBase):
    type: Literal["template"] = "template"
    template: Template


class TextMessage(_MessageBase):
    type: Literal["text"] = "text"
    text: Text


class InteractiveMessage(_MessageBase):
    type: Literal["interactive"] = "interactive"
    interactive: Interactive


OutboundMessage = Annotated[TemplateMessage | TextMessage | InteractiveMessage, Field(discriminator="type")]


# --- answers to POST /messages -----------------------------------------------------------


class SentContact(_In):
    input: str
    wa_id: str


class SentMessage(_In):
    id: str
    message_status: str | None = None


class SendResponse(_In):
    messaging_product: Literal["whatsapp"]
    contacts: list[SentContact] = Field(default_factory=list)
    messages: list[SentMessage] = Field(..., min_length=1)


class ErrorData(_In):
    messaging_product: str | None = None
    details: str | None = None


class GraphError(_In):
    message: str = ""
    type: str | None = None
    code: int
    error_subcode: int | None = None
    error_data: ErrorData | None = None
    fbtrace_id: str | None = None


class ErrorResponse(_In):
    error: GraphError


# --- webhooks: field "messages" ------------------------------------------------------------


class Metadata(_In):
    display_phone_number: str
    phone_number_id: str


class WebhookErrorData(_In):
    details: str | None = None


class WebhookError(_In):
    code: int
    title: str | None = None
    message: str | None = None
    error_data: WebhookErrorData | None = None
    href: str | None = None


class ConversationOrigin(_In):
    type: str


class Conversation(_In):
    id: str
    expiration_timestamp: str | None = None
    origin: ConversationOrigin | None = None


class Pricing(_In):
    billable: bool | None = None
    pricing_model: str | None = None
    category: str | None = None
    type: str | None = None


class Status(_In):
    id: str = Field(..., min_length=1, max_length=128, description="The wamid of our message.")
    # A str, not a Literal: a status Meta adds later must not make us refuse (and Meta re-send) the batch.
    status: str = Field(..., min_length=1, max_length=32)
    timestamp: str = Field(..., pattern=r"^\d{1,12}$")
    recipient_id: str | None = None
    biz_opaque_callback_data: str | None = Field(None, max_length=CALLBACK_DATA_MAX)
    conversation: Conversation | None = None
    pricing: Pricing | None = None
    errors: list[WebhookError] = Field(default_factory=list)


class Profile(_In):
    name: str | None = None


class Contact(_In):
    wa_id: str
    profile: Profile | None = None


class InboundText(_In):
    body: str


class InboundButton(_In):
    """A tap on a template's quick-reply button."""

    payload: str | None = None
    text: str | None = None


class ButtonReply(_In):
    id: str
    title: str | None = None


class ListReply(_In):
    id: str
    title: str | None = None
    description: str | None = None


class InboundInteractive(_In):
    type: str  # "button_reply" | "list_reply"
    button_reply: ButtonReply | None = None
    list_reply: ListReply | None = None


class InboundMedia(_In):
    """An image, document, audio, video or sticker a customer sent: a media id to download later, not the bytes."""

    id: str
    mime_type: str | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None


MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")


class MessageContext(_In):
    from_: str | None = Field(None, alias="from")
    id: str | None = None


class InboundMessage(_In):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    from_: str = Field(..., alias="from", min_length=1, max_length=32)
    id: str = Field(..., min_length=1, max_length=128)
    timestamp: str = Field(..., pattern=r"^\d{1,12}$")
    type: str
    text: InboundText | None = None
    button: InboundButton | None = None
    interactive: InboundInteractive | None = None
    image: InboundMedia | None = None
    document: InboundMedia | None = None
    audio: InboundMedia | None = None
    video: InboundMedia | None = None
    sticker: InboundMedia | None = None
    context: MessageContext | None = None
    errors: list[WebhookError] = Field(default_factory=list)

    @property
    def media(self) -> InboundMedia | None:
        """The attachment of a media message (``image``, ``document``…), or ``None``."""
        return getattr(self, self.type, None) if self.type in MEDIA_TYPES else None


class ChangeValue(_In):
    messaging_product: Literal["whatsapp"]
    metadata: Metadata
    contacts: list[Contact] = Field(default_factory=list)
    messages: list[InboundMessage] = Field(default_factory=list)
    statuses: list[Status] = Field(default_factory=list)
    errors: list[WebhookError] = Field(default_factory=list)


# --- webhooks about the account (template status, quality and category, phone number, account) ---


class _Kept(BaseModel):
    """A management webhook's value: recorded as received, so the fields we do not model are kept too."""

    model_config = ConfigDict(extra="allow")


class _TemplateRef(_Kept):
    message_template_id: int | None = None
    message_template_name: str = Field(..., min_length=1, max_length=512)
    # "es", "en_US"; Meta's reference also shows "en-US". Absent: the event is about every language.
    message_template_language: str | None = Field(None, max_length=32)


class TemplateOtherInfo(_Kept):
    title: str | None = None  # FIRST_PAUSE, SECOND_PAUSE, UNPAUSE…
    description: str | None = None


class TemplateRejectionInfo(_Kept):
    reason: str | None = None
    recommendation: str | None = None


class TemplateStatusUpdate(_TemplateRef):
    # A str, not a Literal: an event Meta adds later must not make us refuse (and Meta re-send) it.
    event: str = Field(..., min_length=1, max_length=64)  # APPROVED, PAUSED, DISABLED, REJECTED, PENDING_DELETION…
    reason: str | None = None  # the rejection reason; "NONE" for a pause; null before a deletion
    message_template_category: str | None = None
    other_info: TemplateOtherInfo | None = None
    rejection_info: TemplateRejectionInfo | None = None


class TemplateQualityUpdate(_TemplateRef):
    previous_quality_score: str | None = None
    new_quality_score: str = Field(..., min_length=1, max_length=32)  # GREEN, YELLOW, RED, UNKNOWN


class TemplateCategoryUpdate(_TemplateRef):
    previous_category: str | None = None
    new_category: str | None = None
    correct_category: str | None = None  # an impending change: the category it gets at category_update_timestamp
    category_update_timestamp: int | None = None


class PhoneNumberQualityUpdate(_Kept):
    display_phone_number: str | None = None
    event: str = Field(..., min_length=1, max_length=64)  # ONBOARDING, FLAGGED, UNFLAGGED, DOWNGRADE, UPGRADE…
    current_limit: str | None = None
    old_limit: str | None = None
    max_daily_conversations_per_business: str | None = None


class AccountUpdate(_Kept):
    """``account_update``: violations, restrictions, bans… (their ``*_info`` objects are kept as received)."""

    event: str = Field(..., min_length=1, max_length=64)


MESSAGES = "messages"
TEMPLATE_STATUS = "message_template_status_update"
TEMPLATE_QUALITY = "message_template_quality_update"
TEMPLATE_CATEGORY = "template_category_update"
PHONE_NUMBER_QUALITY = "phone_number_quality_update"
ACCOUNT_UPDATE = "account_update"
_OTHER = "other"


class MessagesChange(_In):
    field: str
    value: ChangeValue


class _AccountChange(_In):
    field: str = Field(..., min_length=1, max_length=128)
    value: Any

    def received(self) -> Any:
        """The value as Meta sent it, for the record."""
        return self.value.model_dump(mode="json", exclude_unset=True) if isinstance(self.value, BaseModel) else self.value


class TemplateStatusChange(_AccountChange):
    value: TemplateStatusUpdate


class TemplateQualityChange(_AccountChange):
    value: TemplateQualityUpdate


class TemplateCategoryChange(_AccountChange):
    value: TemplateCategoryUpdate


class PhoneNumberQualityChange(_AccountChange):
    value: PhoneNumberQualityUpdate


class AccountUpdateChange(_AccountChange):
    value: AccountUpdate


class OtherChange(_AccountChange):
    """A field Puente does not act on: accepted and recorded as it came."""


AccountChange = (
    TemplateStatusChange | TemplateQualityChange | TemplateCategoryChange | PhoneNumberQualityChange
    | AccountUpdateChange | OtherChange
)
_KNOWN_FIELDS = frozenset({MESSAGES, TEMPLATE_STATUS, TEMPLATE_QUALITY, TEMPLATE_CATEGORY, PHONE_NUMBER_QUALITY, ACCOUNT_UPDATE})


def _field_of(change: Any) -> str:
    field = change.get("field") if isinstance(change, dict) else getattr(change, "field", None)
    return field if field in _KNOWN_FIELDS else _OTHER


# A known field must have its shape (or the body is malformed, 400); any other field is taken as it is.
Change = Annotated[
    Annotated[MessagesChange, Tag(MESSAGES)]
    | Annotated[TemplateStatusChange, Tag(TEMPLATE_STATUS)]
    | Annotated[TemplateQualityChange, Tag(TEMPLATE_QUALITY)]
    | Annotated[TemplateCategoryChange, Tag(TEMPLATE_CATEGORY)]
    | Annotated[PhoneNumberQualityChange, Tag(PHONE_NUMBER_QUALITY)]
    | Annotated[AccountUpdateChange, Tag(ACCOUNT_UPDATE)]
    | Annotated[OtherChange, Tag(_OTHER)],
    Discriminator(_field_of),
]
_CHANGE = TypeAdapter(Change)


def account_change(field: str, value: Any) -> AccountChange:
    """A recorded management event as its typed change again (``field`` is never ``messages``)."""
    change = _CHANGE.validate_python({"field": field, "value": value})
    assert not isinstance(change, MessagesChange), field
    return change


class Entry(_In):
    id: str
    time: int | None = Field(None, ge=0, le=10**11)  # unix seconds; management webhooks carry it, messages do not
    changes: list[Change]


class WebhookPayload(_In):
    object: Literal["whatsapp_business_account"]
    entry: list[Entry] = Field(..., min_length=1)


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON body as the API expects it: aliases, no nulls."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)
