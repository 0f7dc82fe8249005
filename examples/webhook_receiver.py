"""Receive limner's job webhooks and check their signatures with the Standard Webhooks library.

    pip install standardwebhooks
    limner consumers webhook NAME          # prints the consumer's whsec_... secret
    LIMNER_WEBHOOK_SECRET=whsec_... python webhook_receiver.py 9000

Then submit with ``Prefer: respond-async`` and ``Limner-Webhook-Url: http://<this host>:9000/hooks`` (a
loopback or private address needs LIMNER_WEBHOOK_ALLOW_PRIVATE=true on the server).
"""

import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

verifier = Webhook(os.environ["LIMNER_WEBHOOK_SECRET"])
seen: set[str] = set()  # webhook-id repeats on retries: handle each event once


class Hooks(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            event = verifier.verify(body, dict(self.headers))
        except WebhookVerificationError:
            self.send_response(400)
            self.end_headers()
            return
        if self.headers["webhook-id"] not in seen:
            seen.add(self.headers["webhook-id"])
            job = event["data"]
            print(event["type"], job["id"], job["status"], job["result_url"], flush=True)
        self.send_response(204)  # any 2xx stops the retries
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    HTTPServer(("127.0.0.1", port), Hooks).serve_forever()
