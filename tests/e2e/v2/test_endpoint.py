"""/v2 is mounted like v1: possibleTypes as checked in, GraphiQL, both WebSocket protocols,
and one API key works on both versions."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.api import Server
from tests.e2e.v2.client import LEGACY_GRAPHQL_WS, V2Api, stored

POSSIBLE_TYPES_FILE = Path(__file__).parents[3] / "jobql" / "schema" / "v2" / "possible-types.json"


async def test_possible_types_are_served_as_checked_in(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/v2/possible-types.json")
    assert response.status_code == 200
    served = response.json()
    assert served == json.loads(POSSIBLE_TYPES_FILE.read_text("utf-8"))
    types = served["possibleTypes"]
    assert set(types["V2Node"]) == {"V2Job", "V2Task", "V2Viewer"}
    assert set(types["V2JobFinished"]) == {"V2JobSucceeded", "V2JobFailed", "V2JobCancelled"}
    assert "V2Heartbeat" not in types["V2JobEvent"]
    assert "V2Heartbeat" in types["V2JobEventResult"]
    assert "V2JobError" in types["V2Error"]
    names = set(types).union(*types.values())
    assert names
    assert not any(name.startswith("V1") for name in names)


async def test_graphiql_is_served_for_v2(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/v2/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>jobql GraphiQL</title>" in response.text


async def test_one_key_speaks_both_versions(server: Server, v2: V2Api) -> None:
    both = await v2.http.post("/v1/graphql", json={"query": "{ viewer { name tier } }"})
    assert both.json()["data"]["viewer"] == {"name": "alice", "tier": "standard"}
    assert (await v2.execute("{ viewer { name plan } }"))["viewer"] == {
        "name": "alice",
        "plan": "standard",
    }


async def test_job_events_on_the_legacy_protocol(v2: V2Api) -> None:
    job = await v2.submit_ok("echo", {"topic": "legacy"})
    events = await v2.events(job["id"], protocol=LEGACY_GRAPHQL_WS)
    assert events[-1]["__typename"] == "V2JobSucceeded"
    seqs = [e["seq"] for e in stored(events)]
    assert seqs == list(range(1, len(seqs) + 1))
