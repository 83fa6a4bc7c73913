"""HTTP caching for catalogue answers: short public max-age plus a strong ETag, answered 304 when unchanged."""

from flask import Response, current_app, request, session


def cacheable(resp: Response) -> Response:
    """Mark a catalogue response cacheable by browsers and a CDN, with an ETag of its body.

    A page that showed this visitor a flashed message (and so changed their session) is theirs
    alone: it is marked private instead, so no shared cache hands it to someone else.
    """
    if session.modified:
        resp.headers["Cache-Control"] = "private, no-store"
        return resp
    # Browsers revalidate every time (a cheap 304 thanks to the ETag); a shared cache (CDN) may keep
    # the page for CATALOG_MAX_AGE seconds, the longest a price change can take to reach shoppers.
    resp.headers["Cache-Control"] = (
        f"public, max-age=0, s-maxage={current_app.config['CATALOG_MAX_AGE']}, must-revalidate"
    )
    resp.headers["Vary"] = "Accept-Encoding"
    resp.add_etag()
    return resp.make_conditional(request)
