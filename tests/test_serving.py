"""End to end serving (spec 9, issue 16) with a real redis-server and the real HTTP server: a
small MIC run exported as a bundle (CLI), loaded into Redis (CLI), served by uvicorn over a
socket; answers equal to `mic_tf.inference` on the same bundle, events, hot reload under traffic,
Redis stopped and paused mid-traffic, bad input, the API key, and schemathesis fuzzing.

No assert depends on timing: waits poll for a state with a generous deadline.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from mic_tf.inference import CrossChannelInference
from mic_tf.inference.score import recommend as library_recommend
from tests.conftest import REPO
from tests.redis_server import RedisServer, ServerThread, free_port

KEY = "test-key"
HDR = {"X-API-Key": KEY}
RUN_ARGS = ["--dataset=ml-100k", "--encoder=comirec_sa", "--plugin=mic", "--mic_preset=paper",
            "--max_steps=40",
            "--eval_every=20", "--mining_every=20", "--batch_size=64", "--embedding_dim=16",
            "--verbose=2"]


def cli(*args, timeout=600):
    result = subprocess.run([sys.executable, "-m", "mic_tf.serving", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=timeout)
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, ml100k_raw_dir):
    out = tmp_path_factory.mktemp("serving") / "run"
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"), *RUN_ARGS,
                             f"--output_dir={out}", f"--raw_dir={ml100k_raw_dir}"], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def bundles(run_dir):
    """Two versions of the run's bundle: b1 through the CLI, b2 through the library."""
    from mic_tf.serving.export import export_run

    b1, b2 = run_dir.parent / "b1", run_dir.parent / "b2"
    result = cli("export", f"--run_dir={run_dir}", f"--bundle_dir={b1}")
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    export_run(run_dir, b2, log=lambda m: None)
    return b1, b2, info


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service(bundles, redis_server):
    """b1 loaded into Redis (CLI) and served in a thread, with an API key."""
    from mic_tf.serving.app import ServingSettings, create_app
    from mic_tf.serving.store import StoreSettings

    b1 = bundles[0]
    result = cli("load", f"--bundle_dir={b1}", f"--redis_url={redis_server.url}")
    assert result.returncode == 0, result.stderr[-3000:]
    # Time-outs far above a loaded machine's stalls, so that only a stopped Redis degrades.
    settings = ServingSettings(bundle_dir=str(b1), api_key=KEY,
                               store=StoreSettings(url=redis_server.url, timeout_ms=3000,
                                                   connect_timeout_ms=3000, backoff_ms=200),
                               max_body_bytes=8192)
    app = create_app(settings)
    with ServerThread(app) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield app.state.mic, client, server


def post(client, path, body, **kw):
    return client.post(path, json=body, **kw)


def expected(model, history, user=-1, n=None):
    """The library's answer (`recommend`, online pick) for the tower's vector of `history`."""
    import dataclasses

    cfg = dataclasses.replace(model.config, top_n=n or model.config.top_n)
    q = model.tower.embed([history], model.features(user))
    h = np.asarray(history, np.int64)[None]
    result = library_recommend(model.datastore, q, h, cfg, online=True,
                               exclude_users=[user] if 0 <= user < model.num_train_users
                               else None)
    items, scores = result.items[0], result.scores[0]
    real = items > 0
    one_items, one_scores = CrossChannelInference(model.datastore, cfg).recommend_one(
        q[0], history, exclude_user=user if 0 <= user < model.num_train_users else -1)
    assert np.array_equal(one_items, items) and np.array_equal(one_scores, scores)
    chans = [[c for c, r in result.channels.items() if i in r[0]] for i in items[real]]
    return model.item_raw[items[real]].tolist(), scores[real].tolist(), chans


def answer(r):
    assert r.status_code == 200, r.text
    body = r.json()
    return ([x["item_id"] for x in body["items"]], [x["score"] for x in body["items"]],
            [x["channels"] for x in body["items"]], body)


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- bundle and load
def test_export_records_the_runs_inference_and_the_online_tables(bundles, run_dir):
    from mic_tf.serving.bundle import Bundle

    b1, b2, info = bundles
    bundle = Bundle(b1)
    flags = json.loads((run_dir / "flags.json").read_text())
    stored = bundle.meta["inference"]
    for name, value in stored.items():
        want = flags["top_n"] if name == "top_n" else flags[f"inference_{name}"]
        assert value == want, name
    assert info["version"] == bundle.version != Bundle(b2).version
    assert bundle.meta["index_type"] == "flat" and bundle.meta["item_score"] == "dot"
    assert bundle.meta["history_cap"] == max(flags["maxlen"], stored["m"], stored["m2"])
    similar = bundle.similar_users()
    assert similar.shape == (754, 40)
    assert not (similar == np.arange(754)[:, None]).any()  # nobody is their own neighbour
    pop = bundle.popular()
    assert (np.diff(pop[:, 1]) <= 0).all()
    # refuses to overwrite a folder that is not a bundle
    result = cli("export", f"--run_dir={run_dir}", f"--bundle_dir={run_dir}")
    assert result.returncode != 0 and "not a serving bundle" in result.stderr


def test_load_writes_versioned_keys_and_marks_the_version_ready_last(service, bundles,
                                                                     redis_server):
    import redis

    from mic_tf.serving.bundle import Bundle
    from mic_tf.serving.keys import Keys, decode_ids

    bundle = Bundle(bundles[0])
    r = redis.Redis.from_url(redis_server.url)
    k = Keys("mic", bundle.version)
    ready = json.loads(r.get(k.ready))
    assert ready["users"] == 943 and ready["items"] == 1349
    assert ready["keys"] == 943 + 754 + 1349 + 1
    users = bundle.user_ids()
    items, offsets = bundle.histories()
    for u in (0, 753, 754, 942):
        assert decode_ids(r.get(k.history(users[u]))).tolist() == \
            items[offsets[u]:offsets[u + 1]].tolist()
    assert decode_ids(r.get(k.similar_users(users[5]))).tolist() == \
        bundle.similar_users()[5].tolist()
    assert decode_ids(r.get(k.similar_items(7))).tolist() == \
        bundle.item_neighbours()[7].tolist()
    assert r.get(k.active).decode() == bundle.version
    again = cli("load", f"--bundle_dir={bundles[0]}", f"--redis_url={redis_server.url}")
    assert again.returncode == 0 and json.loads(again.stdout.splitlines()[-1])["skipped"]


# --------------------------------------------------------------------------- same answers
def test_answers_equal_cross_channel_inference_on_the_same_bundle(service):
    """Training users (precomputed U2U list, themselves excluded), valid/test users (U2U
    searched online) and given histories, at several n: items, scores and channels equal."""
    state, client, _ = service
    model = state.model
    rng = np.random.default_rng(0)
    users = list(rng.choice(754, 6, replace=False)) + list(rng.choice(np.arange(754, 943), 4,
                                                                      replace=False))
    for j, u in enumerate(users):
        n = (10, 50, 200)[j % 3]
        history = model.bundle_history(int(u))
        items, scores, chans, body = answer(post(client, "/v1/recommend",
                                                 {"user_id": model.user_raw[u], "n": n}))
        assert body["degraded"] == [] and body["fallback"] is None
        assert body["history_length"] == len(history)
        assert (items, scores, chans) == expected(model, history, int(u), n)
    for length in (1, 5, 80):
        raw = list(model.item_raw[rng.choice(np.arange(1, 1350), length)])
        items, scores, chans, body = answer(post(client, "/v1/recommend",
                                                 {"history": raw, "n": 30}))
        assert (items, scores, chans) == expected(model, model.item_ids(raw)[-model.cap:],
                                                  n=30)
    # without n: the bundle's top_n (the run's N)
    _, _, _, body = answer(post(client, "/v1/recommend", {"user_id": model.user_raw[0]}))
    assert len(body["items"]) == model.config.top_n


# --------------------------------------------------------------------------- events
def test_events_reach_the_next_recommend(service):
    state, client, _ = service
    model = state.model
    new = "brand-new-user"
    _, _, _, body = answer(post(client, "/v1/recommend", {"user_id": new, "n": 5}))
    assert body["fallback"] == "popular" and body["history_length"] == 0
    assert [x["channels"] for x in body["items"]] == [["popular"]] * 5
    clicks = ["50", "181", "1"]
    for i, item in enumerate(clicks):
        r = post(client, "/v1/events", {"user_id": new, "item_id": item, "timestamp": 1e9 + i},
                 headers=HDR)
        assert r.status_code == 200 and r.json()["events"] == i + 1, r.text
    items, scores, chans, body = answer(post(client, "/v1/recommend", {"user_id": new, "n": 40}))
    assert body["fallback"] is None and body["history_length"] == 3
    assert (items, scores, chans) == expected(model, model.item_ids(clicks), n=40)
    # a training user's click reaches the U2U channel of a user whose neighbour they are
    b = 11
    a = int(model.bundle.similar_users()[b][0])
    seen = set(model.bundle_history(a).tolist())
    fresh = next(i for i in range(1349, 0, -1) if i not in seen)
    raw = model.item_raw[fresh]
    r = post(client, "/v1/events", {"user_id": model.user_raw[a], "item_id": raw}, headers=HDR)
    assert r.status_code == 200, r.text
    _, _, _, body = answer(post(client, "/v1/recommend",
                                {"user_id": model.user_raw[b], "n": 1000}))
    got = {x["item_id"]: x["channels"] for x in body["items"]}
    assert "u2u" in got[raw]
    _, _, _, body = answer(post(client, "/v1/recommend",
                                {"user_id": model.user_raw[a], "n": 10}))
    assert body["history_length"] == min(len(seen) + 1, model.cap)


def test_the_thread_pool_route_gives_the_same_answers(service):
    """`--noinline_recommend` (recommend in FastAPI's thread pool, not on the event loop's
    thread) answers exactly the same."""
    import dataclasses

    from mic_tf.serving.app import create_app

    state, client, _ = service
    assert state.settings.inline_recommend  # the default
    app = create_app(dataclasses.replace(state.settings, inline_recommend=False), state.model)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=60) as pool:
        for body in ({"user_id": state.model.user_raw[3], "n": 30},
                     {"user_id": state.model.user_raw[800], "n": 200},
                     {"history": ["50", "172"], "n": 20}):
            inline, threaded = (answer(post(c, "/v1/recommend", body))[3] for c in (client, pool))
            assert without_timings(inline) == without_timings(threaded)


# --------------------------------------------------------------------------- bad input, keys
def test_bad_input_gets_clear_4xx(service):
    state, client, _ = service
    model = state.model
    r = post(client, "/v1/recommend", {"history": ["50", "no-such-item", "nope2"]})
    assert r.status_code == 422 and r.json()["unknown_item_ids"] == ["no-such-item", "nope2"]
    assert "no-such-item" in r.json()["error"]
    r = post(client, "/v1/events", {"user_id": "x", "item_id": "no-such-item"}, headers=HDR)
    assert r.status_code == 422 and r.json()["unknown_item_ids"] == ["no-such-item"]
    for body, needle in (({"user_id": "1", "n": 0}, "n: Input should be greater"),
                         ({"user_id": "1", "n": 1001}, "n: Input should be less"),
                         ({"user_id": "1", "history": ["50"]}, "exactly one"),
                         ({}, "exactly one"), ({"user_id": "1", "m": 3}, "m: Extra inputs"),
                         ({"history": "50"}, "history: Input should be a valid list"),
                         ({"user_id": ""}, "user_id: String should have at least")):
        r = post(client, "/v1/recommend", body)
        assert r.status_code == 422 and needle in r.json()["error"], (body, r.text)
    r = client.post("/v1/recommend", content=b'{"user_id": "1", ', headers={
        "Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.post("/v1/recommend", content=b'{"user_id": "1"}')
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    big = {"history": ["50"] * 3000}
    r = post(client, "/v1/recommend", big)
    assert r.status_code == 413 and "8192 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"history": ['
        for _ in range(2000):
            yield b'"50", '
        yield b'"50"]}'
    r = client.post("/v1/recommend", content=chunks(), headers={
        "Content-Type": "application/json"})
    assert r.status_code == 413
    r = post(client, "/v1/events", {"user_id": "x", "item_id": "50", "timestamp": -1},
             headers=HDR)
    assert r.status_code == 422 and "timestamp" in r.json()["error"]
    assert model.version  # the service still serves


def test_api_key_guards_writes_and_admin_only(service, bundles):
    _, client, _ = service
    body = {"user_id": "key-user", "item_id": "50"}
    assert post(client, "/v1/events", body).status_code == 401
    assert post(client, "/v1/events", body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert post(client, "/v1/events", body, headers=HDR).status_code == 200
    r = post(client, "/v1/admin/reload", {"bundle_dir": str(bundles[1])})
    assert r.status_code == 401 and "X-API-Key" in r.json()["error"]
    assert post(client, "/v1/recommend", {"user_id": "key-user"}).status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"


def test_serve_refuses_a_public_host_without_a_key(bundles):
    result = cli("serve", f"--bundle_dir={bundles[0]}", "--host=0.0.0.0", "--port=1")
    assert result.returncode != 0 and "--api_key" in result.stderr


# --------------------------------------------------------------------------- reload
class Traffic:
    """Background clients: recommends (by user and by history) and events, every answer kept."""

    def __init__(self, client, users, threads=3):
        self.client, self.users, self.stop = client, users, threading.Event()
        self.results, self.lock = [], threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True)
                        for i in range(threads)]

    def _loop(self, i):
        j = 0
        while not self.stop.is_set():
            j += 1
            if j % 5 == 0:
                path, body, headers = "/v1/events", {"user_id": f"traffic-{i}",
                                                     "item_id": "50"}, HDR
            elif j % 2:
                path, body, headers = "/v1/recommend", {"user_id": self.users[j % len(
                    self.users)], "n": 20}, None
            else:
                path, body, headers = "/v1/recommend", {"history": ["50", "172"], "n": 20}, None
            started = time.monotonic()
            try:
                r = self.client.post(path, json=body, headers=headers)
                out = (path, r.status_code, r.json(), started, r.headers.get("x-mic-worker"))
            except Exception as e:  # a failed request is a result too
                out = (path, None, repr(e), started, None)
            with self.lock:
                self.results.append(out)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def count(self):
        with self.lock:
            return len(self.results)


def test_reload_under_traffic_has_zero_failed_requests(service, bundles, redis_server):
    from mic_tf.serving.bundle import Bundle
    from mic_tf.serving.loader import bulk_load, drop_version
    from mic_tf.serving.store import StoreSettings, connect

    state, client, _ = service
    b1, b2 = Bundle(bundles[0]), Bundle(bundles[1])
    r = post(client, "/v1/admin/reload", {"bundle_dir": str(bundles[1])}, headers=HDR)
    assert r.status_code == 409 and "load" in r.json()["error"]  # not in Redis yet
    r = post(client, "/v1/admin/reload", {"bundle_dir": "/no/such/bundle"}, headers=HDR)
    assert r.status_code == 400 and "not a serving bundle" in r.json()["error"]
    redis_client = connect(StoreSettings(url=redis_server.url, timeout_ms=30000))
    bulk_load(b2, redis_client, log=lambda m: None)
    users = list(state.model.user_raw[:50])
    with httpx.Client(base_url=client.base_url, timeout=60) as c, Traffic(c, users) as traffic:
        wait_for(lambda: traffic.count() >= 20, what="traffic")
        r = post(client, "/v1/admin/reload", {"bundle_dir": str(bundles[1])}, headers=HDR)
        assert r.status_code == 200, r.text
        assert r.json() == {**r.json(), "version": b2.version, "previous": b1.version}
        switched = time.monotonic()
        before = traffic.count()
        wait_for(lambda: traffic.count() >= before + 20, what="traffic after the switch")
    failed = [x for x in traffic.results if x[1] != 200]
    assert not failed, failed[:5]
    versions = [x[2]["version"] for x in traffic.results if x[0] == "/v1/recommend"]
    assert set(versions) == {b1.version, b2.version} and state.model.version == b2.version
    # requests in flight at the switch may finish on b1; every request started after it is b2
    after = [x[2]["version"] for x in traffic.results
             if x[0] == "/v1/recommend" and x[3] > switched]
    assert after and set(after) == {b2.version}
    assert all(not x[2]["degraded"] for x in traffic.results if x[0] == "/v1/recommend")
    # events are not versioned: clicks posted before the switch are in v2's histories
    _, _, _, body = answer(post(client, "/v1/recommend", {"user_id": "traffic-0"}))
    assert body["history_length"] > 0 and body["fallback"] is None
    assert 'mic_bundle_info{version="%s"} 1.0' % b2.version in client.get("/metrics").text
    # the old version can go once nothing serves it; the active one is refused
    with pytest.raises(Exception, match="active"):
        drop_version(redis_client, "mic", b2.version, log=lambda m: None)
    removed = drop_version(redis_client, "mic", b1.version, log=lambda m: None)
    assert removed == 943 + 754 + 1349 + 1
    assert not list(redis_client.scan_iter(match=f"mic:{b1.version}:*"))


# --------------------------------------------------------------------------- faults
def test_redis_down_degrades_to_u2i_then_recovers_by_itself(service, redis_server):
    state, client, _ = service
    model = state.model
    user = model.user_raw[3]
    full = answer(post(client, "/v1/recommend", {"user_id": user, "n": 30}))
    assert full[3]["degraded"] == []
    users = list(model.user_raw[:50])
    with httpx.Client(base_url=client.base_url, timeout=60) as c, Traffic(c, users) as traffic:
        wait_for(lambda: traffic.count() >= 10, what="traffic")
        redis_server.stop()
        try:
            stopped_at = traffic.count()
            wait_for(lambda: traffic.count() >= stopped_at + 30, what="traffic while down")
            items, scores, chans, body = answer(post(client, "/v1/recommend",
                                                     {"user_id": user, "n": 30}))
            assert body["degraded"] == ["u2u", "i2i"] and body["fallback"] is None
            assert all(c == ["u2i"] for c in chans) and len(items) == 30
            # U2I alone from the bundle's copy of the history: the library's U2I ranking
            u2i = expected_u2i(model, model.bundle_history(3), 30)
            assert items == u2i
            r = post(client, "/v1/events", {"user_id": user, "item_id": "50"}, headers=HDR)
            assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
            assert "not stored" in r.json()["error"]
            health = client.get("/healthz").json()
            assert health["redis"] == "down" and health["status"] == "degraded"
            assert "mic_redis_errors_total" in client.get("/metrics").text
        finally:
            redis_server.start()
        wait_for(lambda: not post(client, "/v1/recommend", {"user_id": user, "n": 30}).json()[
            "degraded"], what="recovery after the restart")
        restarted_at = traffic.count()
        wait_for(lambda: traffic.count() >= restarted_at + 10, what="traffic after restart")
    assert answer(post(client, "/v1/recommend", {"user_id": user, "n": 30}))[:3] == full[:3]
    results = traffic.results
    assert all(x[1] in (200, 503) for x in results), [x for x in results if x[1] not in (200, 503)]
    assert all(x[0] == "/v1/events" for x in results if x[1] == 503)  # never a recommend
    assert any(x[0] == "/v1/recommend" and x[2]["degraded"] for x in results)
    assert r.status_code == 503 and post(client, "/v1/events", {"user_id": user, "item_id": "50"},
                                         headers=HDR).status_code == 200


def expected_u2i(model, history, n):
    import dataclasses

    cfg = dataclasses.replace(model.config, top_n=n, use_u2u=False, use_i2i=False)
    q = model.tower.embed([history])
    items = library_recommend(model.datastore, q, np.asarray(history)[None], cfg,
                              online=True).items[0]
    return model.item_raw[items[items > 0]].tolist()


def test_slow_redis_times_out_to_degraded_answers(service, redis_server):
    state, client, _ = service
    user = state.model.user_raw[4]
    redis_server.pause()  # accepts connections, never answers: every call times out
    try:
        _, _, _, body = answer(post(client, "/v1/recommend", {"user_id": user, "n": 10}))
        assert body["degraded"] == ["u2u", "i2i"]
        r = post(client, "/v1/events", {"user_id": user, "item_id": "50"}, headers=HDR)
        assert r.status_code == 503 and "Retry-After" in r.headers
    finally:
        redis_server.resume()
    wait_for(lambda: not post(client, "/v1/recommend", {"user_id": user, "n": 10}).json()[
        "degraded"], what="recovery after the pause")


def test_redis_time_outs_under_concurrent_traffic_never_answer_500(service, redis_server):
    """Redis paused under four concurrent clients: their calls in flight time out together;
    every recommend degrades, every event gets 503, none is a 500 (the first time-out used to
    close the sockets the other request threads were reading from)."""
    state, client, _ = service
    users = list(state.model.user_raw[:50])
    with httpx.Client(base_url=client.base_url, timeout=60) as c, \
            Traffic(c, users, threads=4) as traffic:
        wait_for(lambda: traffic.count() >= 10, what="traffic")
        redis_server.pause()
        try:
            time.sleep(4.5)  # past the fixture's 3 s time-out: every call in flight times out
        finally:
            redis_server.resume()
        count = traffic.count()
        wait_for(lambda: traffic.count() >= count + 20, what="traffic after the pause")
    bad = [x for x in traffic.results if x[1] not in (200, 503)]
    assert not bad, bad[:5]
    assert all(x[0] == "/v1/events" for x in traffic.results if x[1] == 503)
    assert any(x[0] == "/v1/recommend" and x[2]["degraded"] for x in traffic.results)
    user = state.model.user_raw[4]
    wait_for(lambda: not post(client, "/v1/recommend", {"user_id": user, "n": 10}).json()[
        "degraded"], what="recovery after the pause")


# --------------------------------------------------------------------------- fuzzing
def test_openapi_schema_fuzzing_finds_no_server_error(service, tmp_path):
    _, client, server = service
    schema = client.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/events", "/v1/admin/reload", "/healthz"} <= set(
        schema["paths"])
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    result = subprocess.run(
        [exe, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
         "--phases", "examples,coverage,fuzzing", "--max-examples", "40", "--seed", "1",
         "--header", f"X-API-Key: {KEY}", "--workers", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# --------------------------------------------------------------------------- several workers
@pytest.fixture(scope="module")
def workers_service(bundles, tmp_path_factory):
    """`serve --workers=2` (the CLI, uvicorn's supervisor and two worker processes) on a Redis
    of its own holding b1 and b2; yields (base url, the first line `serve` printed)."""
    from mic_tf.serving.bundle import Bundle
    from mic_tf.serving.loader import bulk_load
    from mic_tf.serving.store import StoreSettings, connect

    folder = tmp_path_factory.mktemp("workers")
    server = RedisServer(folder / "redis").start()
    redis_client = connect(StoreSettings(url=server.url, timeout_ms=30000))
    for b in bundles[:2]:
        bulk_load(Bundle(b), redis_client, log=lambda m: None)
    port = free_port()
    out = open(folder / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mic_tf.serving", "serve", f"--bundle_dir={bundles[0]}",
         f"--redis_url={server.url}", f"--port={port}", "--workers=2", f"--api_key={KEY}",
         "--redis_timeout_ms=3000", "--redis_connect_timeout_ms=3000"],
        cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def both_up():
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {(folder / 'serve.log').read_text()[-3000:]}")
        try:
            return len(httpx.get(url + "/healthz", timeout=10).json().get("workers", {})) == 2
        except httpx.HTTPError:
            return False
    try:
        wait_for(both_up, timeout=900, what="two workers")
        first = json.loads((folder / "serve.log").read_text().splitlines()[0])
        yield url, first
    finally:
        proc.terminate()
        proc.wait(120)
        server.stop(save=False)
    assert proc.returncode == 0, (folder / "serve.log").read_text()[-3000:]
    assert not os.path.exists(first["state_dir"])  # the state folder goes with the service


def fresh_post(url, path, body, **kw):
    """On a new connection (keep-alive would pin a client to one worker)."""
    return httpx.post(url + path, json=body, timeout=60, **kw)


def by_worker(url, body, count=2, timeout=300.0):
    """Answers to the same request from `count` different workers: {pid: answer}."""
    seen = {}

    def enough():
        r = fresh_post(url, "/v1/recommend", body)
        assert r.status_code == 200, r.text
        seen.setdefault(r.headers["x-mic-worker"], r.json())
        return len(seen) >= count
    wait_for(enough, timeout=timeout, what=f"answers from {count} workers")
    return seen


def without_timings(body):
    return {k: v for k, v in body.items() if k != "timings_ms"}


def test_two_workers_give_the_same_answers_and_see_every_event(workers_service, bundles):
    from mic_tf.serving.bundle import Bundle

    url, first = workers_service
    assert first["workers"] == 2 and first["serving"] == Bundle(bundles[0]).version
    health = httpx.get(url + "/healthz").json()
    assert set(health["workers"].values()) == {first["serving"]}
    answers = by_worker(url, {"user_id": "196", "n": 50})
    a, b = (without_timings(x) for x in answers.values())
    assert a == b and a["degraded"] == [] and a["version"] == first["serving"]
    # an event posted to one worker is in the next recommend of every worker (Redis is shared)
    r = fresh_post(url, "/v1/events", {"user_id": "workers-new", "item_id": "50"}, headers=HDR)
    assert r.status_code == 200, r.text
    answers = by_worker(url, {"user_id": "workers-new", "n": 20})
    for body in answers.values():
        assert body["history_length"] == 1 and body["fallback"] is None
    a, b = (without_timings(x) for x in answers.values())
    assert a == b


def metric_value(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            got = ",".join(sorted(series[len(name) + 1:-1].split(",")))
            if all(part in got.split(",") for part in want.split(",")):
                total += float(value)
    return total


def test_two_workers_reload_reaches_both_with_zero_failed_requests(workers_service, bundles):
    from mic_tf.serving.bundle import Bundle

    url, _ = workers_service
    b1, b2 = Bundle(bundles[0]), Bundle(bundles[1])
    r = fresh_post(url, "/v1/admin/reload", {"bundle_dir": "/no/such/bundle"}, headers=HDR)
    assert r.status_code == 400 and "not a serving bundle" in r.json()["error"]
    before = metric_value(httpx.get(url + "/metrics").text, "mic_http_requests_total",
                          route="/v1/recommend", code="200")
    users = [str(u) for u in (196, 186, 22, 244, 166)]
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, timeout=60, limits=no_keepalive) as c, \
            Traffic(c, users) as traffic:
        wait_for(lambda: traffic.count() >= 30, what="traffic")
        r = fresh_post(url, "/v1/admin/reload", {"bundle_dir": str(bundles[1])}, headers=HDR)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == b2.version and body["previous"] == b1.version
        assert body["all_switched"] and set(body["workers"].values()) == {b2.version}
        assert len(body["workers"]) == 2
        switched = time.monotonic()
        count = traffic.count()

        def both_after_switch():  # the kernel spreads connections unevenly on a loaded machine:
            with traffic.lock:    # wait until both workers answered since the switch
                seen = {x[4] for x in traffic.results
                        if x[0] == "/v1/recommend" and x[3] > switched and x[1] == 200}
            return traffic.count() >= count + 30 and len(seen) == 2
        wait_for(both_after_switch, what="traffic from both workers after the switch")
    failed = [x for x in traffic.results if x[1] != 200]
    assert not failed, failed[:5]
    recs = [x for x in traffic.results if x[0] == "/v1/recommend"]
    assert {x[2]["version"] for x in recs} == {b1.version, b2.version}
    assert len({x[4] for x in recs}) == 2  # the traffic reached both workers
    # the reload answered once both workers served b2: every request started after it is b2
    after = [x for x in recs if x[3] > switched]
    assert after and {x[2]["version"] for x in after} == {b2.version}
    assert len({x[4] for x in after}) == 2
    # /metrics, whichever worker answers: the sum over the workers, the version per worker
    # (a request is counted just after its answer is sent: wait for the last ones)
    wait_for(lambda: metric_value(httpx.get(url + "/metrics").text, "mic_http_requests_total",
                                  route="/v1/recommend", code="200") - before == len(recs),
             timeout=30, what="every recommend counted")
    text = httpx.get(url + "/metrics").text
    assert metric_value(text, "mic_bundle_info", version=b2.version) == 2
    assert metric_value(text, "mic_bundle_info", version=b1.version) == 0
    health = httpx.get(url + "/healthz").json()
    assert set(health["workers"].values()) == {b2.version} and health["version"] == b2.version


def test_a_restarted_worker_serves_the_reloaded_bundle(workers_service, bundles):
    """uvicorn replaces a dead worker; the new one starts on the bundle being served (b2 after
    the reload above), not on the --bundle_dir the service was started with."""
    import signal

    from mic_tf.serving.bundle import Bundle

    url, _ = workers_service
    b2 = Bundle(bundles[1]).version
    workers = httpx.get(url + "/healthz").json()["workers"]
    assert set(workers.values()) == {b2}
    victim = int(sorted(workers)[0])
    os.kill(victim, signal.SIGKILL)

    def replaced():
        try:
            now = httpx.get(url + "/healthz", timeout=10).json()["workers"]
        except httpx.HTTPError:
            return False
        return len(now) == 2 and str(victim) not in now and now
    now = wait_for(replaced, timeout=900, what="a replacement worker")
    assert set(now.values()) == {b2}
    answers = by_worker(url, {"user_id": "196", "n": 10})
    assert {x["version"] for x in answers.values()} == {b2}
    # the dead worker's version series left /metrics (its counts stay in the sums)
    text = httpx.get(url + "/metrics").text
    assert f'pid="{victim}"' not in "".join(l for l in text.splitlines()
                                            if l.startswith("mic_bundle_info"))
    assert metric_value(text, "mic_bundle_info", version=b2) == 2


def test_serve_refuses_fewer_than_one_worker(bundles):
    result = cli("serve", f"--bundle_dir={bundles[0]}", "--workers=0", "--port=1")
    assert result.returncode != 0 and "--workers must be >= 1" in result.stderr
