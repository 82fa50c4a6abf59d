"""POST /v1/prompts/expand: the server's own pipeline Gemma writes the XML; rules when it has none."""

from newbie.prompts import expand, parse, to_xml

TEXT = "two girls under cherry blossoms, one with silver hair holding an umbrella"


def test_expand_with_the_pipelines_gemma(make_client):
    client, _ = make_client()
    r = client.post("/v1/prompts/expand", json={"text": TEXT, "max_new_tokens": 24})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "llm" and 0 < body["new_tokens"] <= 24 and body["tokens_per_s"] > 0
    prompt = parse(body["xml"])
    assert prompt.kind == "xml" and prompt.caption
    assert all(set(w) == {"code", "message", "character", "line", "column"} for w in body["warnings"])
    again = client.post("/v1/prompts/expand", json={"text": TEXT, "max_new_tokens": 24}).json()
    assert again["xml"] == body["xml"]  # greedy: deterministic
    seeded = client.post("/v1/prompts/expand", json={"text": TEXT, "max_new_tokens": 24, "seed": 3}).json()
    assert parse(seeded["xml"]).kind == "xml"


def test_rules_on_request_and_xml_passthrough(make_client):
    client, _ = make_client()
    body = client.post("/v1/prompts/expand", json={"text": TEXT, "llm": False}).json()
    assert body["source"] == "rules" and body["xml"] == to_xml(expand(TEXT)) and body["new_tokens"] is None
    xml = "<character_1><gender>1girl</gender></character_1>"
    body = client.post("/v1/prompts/expand", json={"text": xml}).json()
    assert body["source"] == "input" and body["xml"] == to_xml(parse(xml))


def test_bad_requests(make_client):
    client, _ = make_client()
    cases = [
        ({"text": TEXT, "max_new_tokens": 0}, 422, "invalid_field"),
        ({"text": TEXT, "seed": 1, "temperature": 0}, 422, "invalid_field"),
        ({"text": TEXT, "colour": "red"}, 422, "invalid_field"),
        ({"text": "<character_1><gender>1girl</character_1>"}, 422, "invalid_prompt"),
        ({"text": "   "}, 422, "invalid_prompt"),
        ({"text": "x" * 2001}, 413, "prompt_too_long"),
    ]
    for body, status, code in cases:
        r = client.post("/v1/prompts/expand", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["code"] == code


def test_without_a_local_gemma_the_rules_answer(tmp_path):
    from newbie.serve.service import JobService

    class RemoteRunner:  # like a Ray replica: runs jobs, holds no Gemma in this process
        name = "remote"

        def run(self, params, on_step, images=None, data_dir=None):
            raise AssertionError("not called")

    service = JobService(tmp_path / "data", validator=None, runners=[RemoteRunner()])
    out = service.expand(TEXT)
    assert out.source == "rules" and out.xml == to_xml(expand(TEXT)) and "no Gemma" in out.note


def test_waiting_expansions_are_bounded_and_probes_never_wait(make_client):
    """Expansions wait for the running job (they share its Gemma); they must neither starve /healthz and
    /metrics nor pile up without bound."""
    import concurrent.futures
    import dataclasses

    from tests.serve.conftest import LIMITS

    client, service = make_client(limits=dataclasses.replace(LIMITS, max_expands=2))
    runner = service.workers[0].runner
    runner.lock.acquire()  # a job is running
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            waiting = [
                pool.submit(client.post, "/v1/prompts/expand", json={"text": "1girl"}) for _ in range(5)
            ]
            done, _ = concurrent.futures.wait(waiting, timeout=10, return_when="FIRST_COMPLETED")
            refused = [f.result() for f in done]
            assert refused and all(r.status_code == 503 for r in refused)
            assert client.get("/healthz").status_code == 200
            assert client.get("/metrics").status_code == 200
            runner.lock.release()
            codes = sorted(f.result(timeout=60).status_code for f in waiting)
    finally:
        if runner.lock.locked():
            runner.lock.release()
    assert codes.count(200) >= 2 and set(codes) <= {200, 503}


def test_a_seed_past_64_bits_is_a_422(make_client):
    client, _ = make_client()
    r = client.post("/v1/prompts/expand", json={"text": "1girl", "seed": 2**64 + 5})
    assert r.status_code == 422 and r.json()["error"]["param"] == "seed"
