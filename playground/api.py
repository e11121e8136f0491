"""The playground API: start a conversation with a succeeded run's model or a registry model, send a message (202:
the generation is queued for an inference worker) and read its reply as it grows (`?after=` returns only what is
new). A member sees only their own conversations; any other id answers 404."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Query, Router
from ninja.responses import Status

from mtm.api_errors import ApiError
from mtm.audit import Actor, Channel
from playground import services
from playground.schemas import ConversationIn, ConversationOut, GenerationOut, MessageIn
from playground.serializers import conversation_dict, generation_dict
from projects.schemas import ProjectErrorOut

router = Router(tags=["playground"])
ERRORS = {status: ProjectErrorOut for status in (400, 401, 404, 409, 413, 422, 429)}


def _refused(exc: services.Refused) -> ApiError:
    p = exc.problem
    return ApiError.single(exc.status, p.code, p.message, p.hint)


def _user(request: HttpRequest):
    return Actor.of(request, Channel.API).authenticated_user


def _conversation(request: HttpRequest, conversation_id: int):
    conversation = services.conversation_of(_user(request), conversation_id)
    if conversation is None:
        raise ApiError.single(
            404,
            "not_found",
            f"No conversation with id {conversation_id}.",
            "List yours with GET /api/v1/playground/conversations.",
        )
    return conversation


@router.get("/playground/conversations", response={200: list[ConversationOut], **ERRORS})
def list_conversations(request: HttpRequest):
    from playground.models import Conversation

    rows = Conversation.objects.filter(owner=_user(request)).select_related("run")[:200]
    return [conversation_dict(c) for c in rows]


@router.post("/playground/conversations", response={201: ConversationOut, **ERRORS})
def create_conversation(request: HttpRequest, body: ConversationIn):
    try:
        conversation = services.start_conversation(
            actor=Actor.of(request, Channel.API),
            run_id=body.run_id,
            model_name=body.model_name.strip(),
            revision=body.revision.strip(),
            system_prompt=body.system_prompt,
        )
    except services.Refused as exc:
        raise _refused(exc) from None
    return Status(201, conversation_dict(conversation))


@router.get("/playground/conversations/{conversation_id}", response={200: ConversationOut, **ERRORS})
def get_conversation(request: HttpRequest, conversation_id: int):
    return conversation_dict(_conversation(request, conversation_id), turns=True)


@router.delete("/playground/conversations/{conversation_id}", response={204: None, **ERRORS})
def delete_conversation(request: HttpRequest, conversation_id: int):
    conversation = _conversation(request, conversation_id)
    try:
        services.delete_conversation(conversation, actor=Actor.of(request, Channel.API))
    except services.Refused as exc:
        raise _refused(exc) from None
    return Status(204, None)


@router.post("/playground/conversations/{conversation_id}/messages", response={202: GenerationOut, **ERRORS})
def send_message(request: HttpRequest, conversation_id: int, body: MessageIn):
    conversation = _conversation(request, conversation_id)
    params = body.model_dump(exclude={"message"})
    try:
        generation = services.send_message(conversation, body.message, params, actor=Actor.of(request, Channel.API))
    except services.Refused as exc:
        raise _refused(exc) from None
    return Status(202, generation_dict(generation))


@router.get("/playground/generations/{generation_id}", response={200: GenerationOut, **ERRORS})
def read_generation(request: HttpRequest, generation_id: int, after: int = Query(0, ge=0, le=10**9)):
    """The generation as it stands: poll with `after` = the characters of the reply already read; `delta` is the
    rest. Stop once `status` is succeeded or failed."""
    generation = services.generation_of(_user(request), generation_id)
    if generation is None:
        raise ApiError.single(404, "not_found", f"No generation with id {generation_id}.", "")
    return generation_dict(generation, after=after)
