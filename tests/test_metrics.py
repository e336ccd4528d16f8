"""--metrics-listen: Prometheus text with aggregates only, scraped during a real session."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import aiohttp
from support import running_relay, running_workers


def parse(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_metrics_count_a_session_and_name_nothing_private() -> None:
    async with running_relay(metrics_listen="127.0.0.1:0", rate_limit=0) as r:
        metrics_url = f"http://127.0.0.1:{r.relay.metrics_port}/metrics"
        room = await r.create_room(capacity=2)
        a, _ = await r.member(room)
        b, _ = await r.member(room)
        third = await r.raw(room["room"])
        await third.send_json({"type": "join", "secret": room["secret"]})
        await third.expect_closed_with(4409)
        async with r.session.post(f"{r.base}/api/rooms", json={"token": "1.x.y", "nonce": "0"}) as resp:
            assert resp.status == 403
        await a.recv_json()  # b's join
        for _ in range(5):
            await a.send_binary(b"c" * 100)
        for _ in range(5):
            assert (await b.recv()).opcode == 2
        async with r.session.get(metrics_url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
        samples = parse(text)
        assert samples["pugfast_rooms"] == 1
        assert samples["pugfast_connections"] == 2
        assert samples["pugfast_rooms_created_total"] == 1
        assert samples["pugfast_joins_total"] == 2
        assert samples['pugfast_joins_refused_total{reason="room_full"}'] == 1
        assert samples['pugfast_pow_failures_total{reason="bad_proof"}'] == 1
        assert samples["pugfast_messages_relayed_total"] == 5
        assert samples["pugfast_relayed_bytes_total"] == 500
        assert samples["pugfast_deliveries_total"] == 5
        assert samples["pugfast_frames_sent_total"] >= 5
        assert 1 <= samples["pugfast_writes_total"] <= samples["pugfast_frames_sent_total"]
        # Aggregates only: no room id, secret or address, and labels from fixed lists.
        assert room["room"] not in text and room["secret"] not in text
        assert "127.0.0.1" not in text
        labels = set(re.findall(r"\{([^}]*)\}", text))
        fixed = (r'(reason|cap)="[a-z_]+"|quantile="(0\.99|1)"'
                 r'|version="[^"]+",engine="[a-z]+",workers="[0-9]+"')
        assert all(re.fullmatch(fixed, x) for x in labels)
        # The relay's own port does not serve them.
        async with r.session.get(f"{r.base}/metrics") as response:
            assert response.status == 404


async def test_metrics_are_off_by_default() -> None:
    async with running_relay() as r:
        assert r.relay.metrics_port is None


async def scrape(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return parse(await response.text())


LAG_P99 = 'pugfast_event_loop_lag_seconds{quantile="0.99"}'
LAG_MAX = 'pugfast_event_loop_lag_seconds{quantile="1"}'


async def test_the_event_loop_lag_shows_a_stall() -> None:
    async with running_relay(metrics_listen="127.0.0.1:0") as r:
        assert r.relay is not None and r.relay.metrics_port is not None
        await asyncio.sleep(0.35)
        calm = await scrape(r.relay.metrics_port)
        assert 0 <= calm[LAG_P99] <= calm[LAG_MAX] < 0.3
        time.sleep(0.4)  # the loop is held, as by a long callback or a collection
        await asyncio.sleep(0.25)
        stalled = await scrape(r.relay.metrics_port)
        assert stalled[LAG_MAX] >= 0.3


async def test_with_workers_the_lag_is_the_slowest_process() -> None:
    async with running_workers(2, metrics_listen="127.0.0.1:0") as supervisor:
        assert supervisor.metrics_port is not None
        process = supervisor.workers[1].process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)  # worker 1's loop is held for 0.4 s
        await asyncio.sleep(0.4)
        os.kill(process.pid, signal.SIGCONT)
        await asyncio.sleep(0.25)
        samples = await scrape(supervisor.metrics_port)
        assert samples[LAG_MAX] >= 0.3
        assert samples[LAG_P99] <= samples[LAG_MAX]
