"""SQS's two wire protocols, pure: requests to (action, JSON-shaped params), results and errors
back to bytes.

- AWS JSON 1.0 (boto3, the AWS CLI, aiobotocore): ``X-Amz-Target: AmazonSQS.<Action>``, JSON
  in and out; errors carry ``__type`` plus ``x-amzn-query-error: <classic code>;Sender`` so
  botocore (``awsQueryCompatible``) reports the classic code.
- Query (older SDKs, curl): form-encoded ``Action=…`` with ``Attribute.1.Name`` style
  flattening, XML responses and XML errors.

The Content-Type decides which: Amazon::SQS::Simple posts a form *and* sends an
``X-Amz-Target`` header.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote
from xml.sax.saxutils import escape

import orjson

from surge.errors import QueueError

JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
XML_CONTENT_TYPE = "text/xml"
XML_NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"

# The classic (query protocol) codes of errors whose JSON type name differs.
_QUERY_CODES = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    "QueueNameExists": "QueueAlreadyExists",
    **{name: f"AWS.SimpleQueueService.{name}" for name in (
        "BatchEntryIdsNotDistinct", "TooManyEntriesInBatchRequest", "EmptyBatchRequest",
        "InvalidBatchEntryId", "BatchRequestTooLong", "MessageNotInflight",
        "PurgeQueueInProgress", "UnsupportedOperation", "QueueDeletedRecently",
    )},
}
_HTTP_STATUS = {
    "ReceiptHandleIsInvalid": 404,
    "PurgeQueueInProgress": 403,
    "OverLimit": 403,
    "InvalidClientTokenId": 403,
    "SignatureDoesNotMatch": 403,
    "MissingAuthenticationToken": 403,
    "InternalError": 500,
    "ServiceUnavailable": 503,
}
# Errors of the signature check come from AWS's front end, not from SQS: their JSON type
# names are the front end's (the classic code still travels in x-amzn-query-error).
_JSON_TYPES = {
    "SignatureDoesNotMatch": "com.amazon.coral.service#InvalidSignatureException",
    "IncompleteSignature": "com.amazon.coral.service#IncompleteSignatureException",
    "InvalidClientTokenId": "com.amazon.coral.service#UnrecognizedClientException",
    "MissingAuthenticationToken":
        "com.amazon.coral.service#MissingAuthenticationTokenException",
    "RequestExpired": "com.amazon.coral.service#RequestExpired",
}


class Protocol:
    JSON = "json"
    QUERY = "query"


@dataclass(slots=True)
class WireRequest:
    protocol: str
    action: str
    params: dict[str, Any]


def protocol_of(method: str, headers: dict[str, str]) -> str:
    """JSON for an ``application/x-amz-json-*`` body; the query protocol for a form body or
    a GET; by ``X-Amz-Target`` when the Content-Type says neither."""
    content_type = headers.get("content-type", "").lower()
    if content_type.startswith("application/x-amz-json"):
        return Protocol.JSON
    if content_type.startswith("application/x-www-form-urlencoded") or method == "GET":
        return Protocol.QUERY
    return Protocol.JSON if "x-amz-target" in headers else Protocol.QUERY


def decode(protocol: str, method: str, headers: dict[str, str], query: str,
           body: bytes) -> WireRequest:
    """The action of an SQS request in ``protocol`` and its parameters."""
    if protocol == Protocol.JSON:
        target = headers.get("x-amz-target", "")
        action = target.rpartition(".")[2]
        try:
            params = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            raise QueueError("SerializationException", "The request body is not valid JSON.")\
                from None
        if not isinstance(params, dict):
            raise QueueError("SerializationException", "The request body must be a JSON object.")
        return WireRequest(Protocol.JSON, action, params)
    pairs = parse_qsl(query, keep_blank_values=True)
    if method == "POST" and body:
        pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    flat = dict(pairs)
    action = flat.pop("Action", "")
    if not action:
        raise QueueError("MissingAction", "The request must contain the parameter Action.")
    return WireRequest(Protocol.QUERY, action, normalize_query(flat))


# -- query protocol in --------------------------------------------------------------------------

_LIST_NAMES = {
    "AttributeName": "AttributeNames",
    "MessageAttributeName": "MessageAttributeNames",
    "MessageSystemAttributeName": "MessageSystemAttributeNames",
    "TagKey": "TagKeys",
}
_MAP_NAMES = {  # flattened key → (JSON name, key field, value field)
    "Attribute": ("Attributes", "Name", "Value"),
    "MessageAttribute": ("MessageAttributes", "Name", "Value"),
    "MessageSystemAttribute": ("MessageSystemAttributes", "Name", "Value"),
    "Tag": ("Tags", "Key", "Value"),
}
_ENTRY_NAMES = ("SendMessageBatchRequestEntry", "DeleteMessageBatchRequestEntry",
                "ChangeMessageVisibilityBatchRequestEntry")


def _nest(flat: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise QueueError("MalformedQueryString", f"Conflicting parameter {key}.")
            node = child
        node[leaf] = value
    return tree


def _numbered(node: Any) -> list[Any]:
    if not isinstance(node, dict) or not all(k.isdigit() for k in node):
        raise QueueError("MalformedQueryString", "Expected numbered members (.1, .2, …).")
    return [node[k] for k in sorted(node, key=int)]


def _normalize(node: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in node.items():
        if key in _LIST_NAMES:
            params[_LIST_NAMES[key]] = _numbered(value)
        elif key in _MAP_NAMES:
            name, key_field, value_field = _MAP_NAMES[key]
            params[name] = {item.get(key_field, ""): item.get(value_field)
                            for item in _numbered(value)}
        elif key in _ENTRY_NAMES:
            params["Entries"] = [_normalize(entry) for entry in _numbered(value)]
        else:
            params[key] = value
    return params


def normalize_query(flat: dict[str, str]) -> dict[str, Any]:
    """``Attribute.1.Name=X&Attribute.1.Value=Y`` → ``{"Attributes": {"X": "Y"}}`` etc."""
    return _normalize(_nest(flat))


# -- responses out ------------------------------------------------------------------------------

def encode_result(protocol: str, action: str, result: dict[str, Any],
                  request_id: str) -> tuple[bytes, str]:
    if protocol == Protocol.JSON:
        return orjson.dumps(result), JSON_CONTENT_TYPE
    inner = "".join(_xml_member(action, key, value) for key, value in result.items())
    body = (
        f'<?xml version="1.0"?><{action}Response xmlns="{XML_NAMESPACE}">'
        f"<{action}Result>{inner}</{action}Result>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    )
    return body.encode(), XML_CONTENT_TYPE


def error_status(code: str) -> int:
    return _HTTP_STATUS.get(code, 400)


def encode_error(protocol: str, error: QueueError,
                 request_id: str) -> tuple[int, bytes, str, list[tuple[str, str]]]:
    """(status, body, content type, extra headers) of an error response."""
    code = error.code
    message = str(error).removeprefix(f"{code}: ")
    fault = "Sender" if error.sender_fault else "Receiver"
    query_code = _QUERY_CODES.get(code, code)
    status = error_status(code)
    if protocol == Protocol.JSON:
        json_type = _JSON_TYPES.get(code, f"com.amazonaws.sqs#{code}")
        body = orjson.dumps({"__type": json_type, "message": message})
        return status, body, JSON_CONTENT_TYPE, [("x-amzn-query-error", f"{query_code};{fault}")]
    xml = (
        f'<?xml version="1.0"?><ErrorResponse xmlns="{XML_NAMESPACE}"><Error>'
        f"<Type>{fault}</Type><Code>{escape(query_code)}</Code>"
        f"<Message>{escape(message)}</Message><Detail/></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return status, xml.encode(), XML_CONTENT_TYPE, []


_LIST_ELEMENTS = {
    "Messages": "Message",
    "QueueUrls": "QueueUrl",
    "queueUrls": "QueueUrl",
    "Failed": "BatchResultErrorEntry",
    "Results": "ListMessageMoveTasksResultEntry",
}
_MAP_ELEMENTS = {
    "Attributes": ("Attribute", "Name", "Value"),
    "MessageAttributes": ("MessageAttribute", "Name", "Value"),
    "Tags": ("Tag", "Key", "Value"),
}


def _xml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return escape(str(value))


def _xml_member(action: str, key: str, value: Any) -> str:
    if isinstance(value, list):
        element = f"{action}ResultEntry" if key == "Successful" else _LIST_ELEMENTS.get(key, key)
        return "".join(_xml_element(action, element, item) for item in value)
    if key in _MAP_ELEMENTS and isinstance(value, dict):
        element, key_field, value_field = _MAP_ELEMENTS[key]
        return "".join(
            f"<{element}><{key_field}>{escape(name)}</{key_field}>"
            f"{_xml_element(action, value_field, item)}</{element}>"
            for name, item in value.items()
        )
    return _xml_element(action, key, value)


def _xml_element(action: str, name: str, value: Any) -> str:
    if isinstance(value, dict):
        inner = "".join(_xml_member(action, key, item) for key, item in value.items())
        return f"<{name}>{inner}</{name}>"
    return f"<{name}>{_xml_scalar(value)}</{name}>"


def access_key_of(headers: dict[str, str], query: str) -> str | None:
    """The access key id a request names (SigV4 Authorization header, or a presigned URL's
    X-Amz-Credential), unchecked: the SenderId of unsigned local use, where any is taken."""
    authorization = headers.get("authorization", "")
    credential = ""
    if "Credential=" in authorization:
        credential = authorization.split("Credential=", 1)[1]
    elif "X-Amz-Credential=" in query:
        credential = unquote(query.split("X-Amz-Credential=", 1)[1].split("&", 1)[0])
    key = credential.split("/", 1)[0].strip(" ,")
    return key or None
