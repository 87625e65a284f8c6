"""Scheduled outages of the stand-ins, for the demo only: now and then the kolscan stand-in
answers HTTP 500 and the X API stand-in fails, through their control endpoints, so the dashboard
shows deferrals, cancellations and refunds as well as resolutions.

    python -m standins.outages --kolscan URL --xapi URL [--every 900] [--kolscan-for 400]
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request


def _post(url: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def in_outage(elapsed: float, *, every_s: int, for_s: int, offset_s: int = 0) -> bool:
    """Whether `elapsed` seconds after the start fall in an outage: the first one begins at
    `offset_s`, then one of `for_s` seconds every `every_s` seconds."""
    return elapsed >= offset_s and (elapsed - offset_s) % every_s < for_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kolscan", required=True, help="kolscan stand-in base URL")
    parser.add_argument("--xapi", required=True, help="X API stand-in base URL")
    parser.add_argument("--every", type=int, default=900, help="seconds between outages")
    parser.add_argument("--kolscan-for", type=int, default=400, help="kolscan outage seconds")
    parser.add_argument("--xapi-for", type=int, default=240, help="X API outage seconds")
    parser.add_argument("--first-after", type=int, default=360, help="seconds to the first")
    args = parser.parse_args()
    kolscan_down = xapi_down = False
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        # The first outages come a few minutes in: the demo's first markets resolve normally.
        want_kolscan = in_outage(
            elapsed, every_s=args.every, for_s=args.kolscan_for, offset_s=args.first_after
        )
        want_xapi = in_outage(
            elapsed, every_s=args.every, for_s=args.xapi_for, offset_s=args.first_after + 300
        )
        try:
            if want_kolscan != kolscan_down:
                variant = "error" if want_kolscan else "normal"
                _post(f"{args.kolscan}/__standin__/variant", {"variant": variant})
                kolscan_down = want_kolscan
                print(f"outages: kolscan stand-in now {variant}", flush=True)
            if want_xapi != xapi_down:
                if want_xapi:
                    _post(f"{args.xapi}/__standin__/fault", {"kind": "error_500"})
                else:
                    _post(f"{args.xapi}/__standin__/clear", {})
                xapi_down = want_xapi
                print(f"outages: X API stand-in {'down' if want_xapi else 'up'}", flush=True)
        except OSError as exc:  # a stand-in restarting: try again on the next tick
            print(f"outages: {exc}", flush=True)
        time.sleep(5)


if __name__ == "__main__":
    main()
