-- wrk script for the hostile suite: every request is a POST /send with a small text body.
wrk.method = "POST"
wrk.body = "flood"
wrk.headers["Content-Type"] = "text/plain"
