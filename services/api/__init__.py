"""The HTTP API: one more adapter over the application core (services.workspace), mounted under /api
in the app's own process (components/server.py), so the one-owner-per-data-dir rule holds.

- POST /api/v1/chat/completions — OpenAI-compatible (model = KB name; stream or not); the answer keeps
  its [n] markers and carries `citations` (doc, page, start, end, quote) in an extra field;
- POST /api/v1/retrieval — hits with the CLI's JSON fields and every stage's scores;
- /api/v1/kbs, /api/v1/kbs/{kb}/documents (list, upload -> job, delete), /api/v1/jobs/{id};
- /api/auth/* — the sign-in page, sign-out and first-admin setup (team mode);
- /api/docs — the OpenAPI page.

Callers are identified by an API key (`Authorization: Bearer wd_…`, one KB, read or write) or the
browser's session cookie; single-user mode on loopback acts as the local user. Every permission is
checked by the core; errors, FastAPI's own included (services.api.framework), are JSON
{"error": {"message": <Chinese>, "type": …, "code": <HTTP status>}}.
"""
from services.api.app import create_api

__all__ = ["create_api"]
