"""HTTP routes: parse the request, call a service, shape the response."""

from api.schemas import ErrorResponse

# Every /v1 route can answer these, in OpenAI's error envelope.
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse, "description": why}
    for status, why in (
        (400, "Invalid request"),
        (401, "Missing or wrong API key"),
        (404, "Not found"),
        (413, "Request or file too large"),
        (503, "A backing service is unavailable"),
    )
}
