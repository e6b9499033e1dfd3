"""Apply 1,000 peers to wireguard-go: UapiBackend (one UAPI set) against `wg setconf` of the same config.

Needs root, wireguard-go and wg. In a scratch network namespace (no links but
loopback), one wireguard-go device, driven two ways, R repetitions each:

- full: N new peers onto an empty device. UapiBackend.apply_peers (one UAPI
  ``set``, payload built in Python) against ``ip netns exec NS wg setconf IF FILE``
  with the same N peers in a wg config file. The device is emptied (untimed)
  before each repetition; both ways are checked to leave the same peers.
- one peer: the endpoint of one peer changes on the N-peer device.
  UapiBackend.apply_peers([that peer]) against ``wg setconf`` of the whole file
  with that peer changed (what an agent without per-peer diffs runs; setconf
  replaces every peer, so all sessions restart) and ``wg syncconf`` (which
  re-sends every peer without replacing them).
- read: UapiBackend.peers() of the N-peer device (the agent reads before it diffs).
- spawn: ``ip netns exec NS true``, the process cost inside every wg figure.

`wg` talks to the same UAPI socket (/var/run/wireguard/IF.sock).

    python bench/apply.py [--peers 1000] [--reps 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, stats_ms, summary  # noqa: E402


def _keypair() -> tuple[str, str]:
    from agent import keys

    priv = keys.new_wireguard_key()
    return priv, keys.wireguard_public_key(priv)


def _wg_config(private_key: str, port: int, peers: list) -> str:
    lines = ["[Interface]", f"PrivateKey = {private_key}", f"ListenPort = {port}", ""]
    for p in peers:
        lines += ["[Peer]", f"PublicKey = {p.public_key}", f"Endpoint = {p.endpoint}",
                  f"AllowedIPs = {', '.join(p.allowed_ips)}"]
        if p.keepalive:
            lines.append(f"PersistentKeepalive = {p.keepalive}")
        lines.append("")
    return "\n".join(lines)


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _kill_namespace(ns: str) -> None:
    """SIGTERM, then SIGKILL, whatever still runs in ``ns`` (bounded), then delete it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in out:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.strip():
            time.sleep(0.05)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main() -> None:  # noqa: PLR0915 - a linear script
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/apply.py needs root (a network namespace and a TUN device)")
    for tool in ("wireguard-go", "wg", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/apply.py needs {tool} on PATH")

    from agent.wg.uapi import UapiBackend
    from chalicelib.domain.device import PeerConfig

    n = args.peers
    peers = []
    for i in range(n):  # underlay endpoints in 198.18.0.0/15, overlay 100.64/16 and fd5a::/64
        peers.append(PeerConfig(public_key=_keypair()[1], endpoint=f"198.18.{i // 250}.{i % 250 + 1}:51820",
                                allowed_ips=(f"100.64.{i // 250}.{i % 250 + 1}/32", f"fd5a::{i + 1:x}/128"),
                                keepalive=25 if i % 2 else 0))
    desired = {p.public_key: p for p in peers}
    priv, _ = _keypair()
    port = 51820
    ns = f"smbench-{secrets.token_hex(4)}"
    ifname = f"smb{secrets.token_hex(2)}0"
    tmp = Path(tempfile.mkdtemp(prefix="skymesh-bench-apply-"))
    full_conf, changed_conf = tmp / "full.conf", tmp / "changed.conf"
    full_conf.write_text(_wg_config(priv, port, peers))

    _run("ip", "netns", "add", ns)
    wg = UapiBackend(ifname, netns=ns)
    samples: dict[str, list[float]] = {k: [] for k in (
        "uapi_full", "setconf_full", "uapi_one", "setconf_one", "syncconf_one", "uapi_read", "spawn")}
    try:
        wg.ensure_device(priv, port)
        all_keys = list(desired)

        def empty() -> None:
            wg.apply_peers([], list(wg.peers()))

        # check once that both ways leave the same device
        wg.apply_peers(peers, [])
        assert wg.peers() == desired, "UapiBackend did not set what it was given"
        empty()
        _run("ip", "netns", "exec", ns, "wg", "setconf", ifname, str(full_conf))
        assert wg.peers() == desired, "wg setconf did not set the same peers"

        for rep in range(args.reps):
            empty()
            samples["uapi_full"].append(_time(lambda: wg.apply_peers(peers, [])))
            empty()
            samples["setconf_full"].append(_time(lambda: _run(
                "ip", "netns", "exec", ns, "wg", "setconf", ifname, str(full_conf))))
            samples["uapi_read"].append(_time(wg.peers))

            # one peer's endpoint moves; the device holds all N peers now
            k = all_keys[rep % n]
            moved = replace(desired[k], endpoint=f"198.19.{rep % 250}.{rep % 200 + 1}:4500")
            samples["uapi_one"].append(_time(lambda m=moved: wg.apply_peers([m], [])))
            changed = [moved if p.public_key == k else p for p in peers]
            changed_conf.write_text(_wg_config(priv, port, changed))
            samples["setconf_one"].append(_time(lambda: _run(
                "ip", "netns", "exec", ns, "wg", "setconf", ifname, str(changed_conf))))
            samples["syncconf_one"].append(_time(lambda: _run(
                "ip", "netns", "exec", ns, "wg", "syncconf", ifname, str(full_conf))))
            samples["spawn"].append(_time(lambda: _run("ip", "netns", "exec", ns, "true")))
        assert wg.peers() == desired, "the device drifted from the config during the bench"
    finally:
        with contextlib.suppress(Exception):
            wg.delete()
        _kill_namespace(ns)
        shutil.rmtree(tmp, ignore_errors=True)

    def p50(key: str) -> float:
        return percentile(samples[key], 50)

    for key, values in samples.items():
        s = stats_ms(values)
        print(f"{key:13s} p50 {s['p50_ms']:8.2f} ms   p99 {s['p99_ms']:8.2f} ms")
    ratios = {"full_setconf_over_uapi": round(p50("setconf_full") / p50("uapi_full"), 2),
              "one_setconf_over_uapi": round(p50("setconf_one") / p50("uapi_one"), 1),
              "one_syncconf_over_uapi": round(p50("syncconf_one") / p50("uapi_one"), 1)}
    print("ratios (p50):", ratios)
    summary("apply", peers=n, reps=args.reps, **ratios,
            **{f"{k}_{m}": v for k, values in samples.items() for m, v in stats_ms(values).items()
               if m in ("p50_ms", "p99_ms")})


if __name__ == "__main__":
    main()
