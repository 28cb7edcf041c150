"""``attnguide explore``: the server's endpoints through starlette's TestClient, on the toy model.

One module-wide job (``none`` and ``syngen`` at step size 3, a few steps) serves the tests that
read generation results; the reproduction test runs its exported recipe with ``attnguide run``.
Only loopback addresses are used.
"""

from __future__ import annotations

import fnmatch
import re
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnguide.cli.main import main
from attnguide.errors import ConfigError
from attnguide.explore.app import create_app, static_dir
from attnguide.explore.serve import check_host, is_loopback
from attnguide.explore.session import ExploreSession
from attnguide.runs.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle and a blue square"
STEPS = 3
METHODS = [{"name": "none"}, {"name": "syngen", "params": {"step_size": "3"}}]

pytest.importorskip("httpx", reason="starlette's TestClient needs httpx (the dev extra)")
from starlette.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def session():
    return ExploreSession("toyworld")


@pytest.fixture(scope="module")
def client(session):
    return TestClient(create_app(session), base_url="http://127.0.0.1")


def wait_for(client, job_id, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def job(client):
    response = client.post("/api/generate", json={"prompt": PROMPT, "steps": STEPS, "methods": METHODS})
    assert response.status_code == 202, response.text
    status = wait_for(client, response.json()["id"])
    assert status["state"] == "done", status["error"]
    return status


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    import io

    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


# -- the page ------------------------------------------------------------------------------
def test_page_and_its_assets_are_served_from_the_package_with_nothing_remote(client):
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(assets) == ["/static/explore.css", "/static/explore.js"]
    for asset in assets:
        text = client.get(asset).text
        assert client.get(asset).status_code == 200
        # the only URL in the code is SVG's namespace name, which is never fetched
        urls = set(re.findall(r"https?://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{asset} refers to remote resources {urls}"
        assert "@import" not in text and "url(" not in text


def test_static_files_are_package_data_of_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "attnguide.explore" in config["packages"]
    patterns = config["package-data"]["attnguide.explore"]
    files = [p.relative_to(static_dir().parent).as_posix() for p in static_dir().iterdir()]
    assert {"static/index.html", "static/explore.js", "static/explore.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, pat) for pat in patterns), f"{name} would not ship in the wheel"


def test_requests_naming_another_host_are_refused(session):
    # a page on another site that rebinds its name to 127.0.0.1 must not reach the API
    foreign = TestClient(create_app(session), base_url="http://attacker.example")
    assert foreign.get("/api/info").status_code == 400


# -- hosts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts_are_served_without_a_flag(host, capsys):
    assert is_loopback(host)
    assert check_host(host, allow_remote=False) is None
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_a_non_local_host_is_refused_without_allow_remote(host, capsys):
    with pytest.raises(ConfigError, match="--allow-remote"):
        check_host(host, allow_remote=False)
    assert main(["explore", "--host", host]) == 2  # refused before any model loads or port opens
    assert "not a loopback address" in capsys.readouterr().err


def test_allow_remote_serves_any_host_header_after_a_warning(capsys):
    assert check_host("0.0.0.0", allow_remote=True) == ["*"]
    assert "warning: serving on '0.0.0.0'" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value"), [("--port", "70000"), ("--threads", "0")])
def test_a_port_or_thread_count_out_of_range_is_refused(flag, value, capsys):
    assert main(["explore", flag, value]) == 2
    assert f"{flag} {value}" in capsys.readouterr().err


# -- parse and bindings ----------------------------------------------------------------------
def test_parse_shows_arcs_bindings_and_the_token_positions_the_losses_read(client):
    parsed = client.post("/api/parse", json={"prompt": PROMPT}).json()
    words = {w["text"]: w for w in parsed["words"]}
    assert words["red"]["deprel"] == "amod" and parsed["words"][words["red"]["head"]]["text"] == "circle"
    pairs = {b["entity"]["text"]: [m["text"] for m in b["modifiers"]] for b in parsed["bindings"]}
    assert pairs == {"circle": ["red"], "square": ["blue"]}
    roles = {t["piece"].removesuffix("</w>"): (t["position"], t["role"]) for t in parsed["tokens"]}
    assert roles["red"][1] == "modifier" and roles["circle"][1] == "entity" and roles["and"][1] == ""
    bound = [p for b in parsed["bindings"] for w in (*b["modifiers"], b["entity"]) for p in w["tokens"]]
    assert parsed["positions"]["bound"] == sorted(bound)
    assert parsed["positions"]["entities"] == sorted(roles[w][0] for w in ("circle", "square"))


def test_bindings_edited_by_hand_are_what_the_manual_parser_binds(client):
    edited = {"square": ["red"], "circle": ["blue"]}
    parsed = client.post("/api/parse", json={"prompt": PROMPT, "parser": "manual", "bindings": edited}).json()
    assert {b["entity"]["text"]: [m["text"] for m in b["modifiers"]] for b in parsed["bindings"]} == edited


def test_an_edited_binding_naming_a_missing_word_is_a_400_naming_it(client):
    response = client.post("/api/parse", json={"prompt": PROMPT, "parser": "manual", "bindings": {"cat": ["red"]}})
    assert response.status_code == 400
    assert "'cat'" in response.json()["error"] and PROMPT in response.json()["error"]


def test_bindings_need_the_manual_parser(client):
    response = client.post("/api/parse", json={"prompt": PROMPT, "parser": "spacy", "bindings": {"circle": []}})
    assert response.status_code == 400 and "manual parser" in response.json()["error"]


@pytest.mark.parametrize(("body", "named"), [
    ({"prompt": "  "}, "prompt"),
    ({"prompt": PROMPT, "methods": [{"name": "synjen"}]}, "synjen"),
    ({"prompt": PROMPT, "methods": [{"name": "syngen", "params": {"step_sise": "3"}}]}, "step_sise"),
    ({"prompt": PROMPT, "steps": 0}, "steps"),
])
def test_bad_generation_settings_are_a_400_naming_what_is_wrong(client, body, named):
    response = client.post("/api/generate", json=body)
    assert response.status_code == 400
    assert named in response.json()["error"]


# -- methods -----------------------------------------------------------------------------------
def test_methods_list_every_registered_method_with_its_defaults_and_descriptions(client, session):
    rows = {row["name"]: row for row in client.get("/api/methods").json()}
    registry = session.registry
    expected = {"none", *registry.classes["loss"], *(set(registry.classes["callback"]) - {"heatmaps"})}
    assert set(rows) == expected
    for name in registry.classes["loss"]:
        fields = registry.get("loss", name).Params.model_fields
        assert set(rows[name]["params"]) == set(fields)
        for key, info in fields.items():
            if not info.is_required() and isinstance(info.default, (int, float, str, bool)):
                assert rows[name]["params"][key]["default"] == info.default, (name, key)
            assert rows[name]["params"][key]["description"] == (info.description or "")
    assert rows["syngen"]["params"]["step_size"]["description"]


# -- generation ----------------------------------------------------------------------------------
def test_generation_gives_each_method_maps_at_every_step_and_its_loss_terms(client, job):
    cells = {c["label"]: c for c in job["cells"]}
    assert list(cells) == ["none", "syngen"]
    total = job["progress"]["steps"]  # the scheduler's number of timesteps
    assert total >= STEPS and job["progress"]["step"] == total
    for cell in cells.values():
        assert cell["steps"] == list(range(total))
        assert cell["words"] == ["red", "circle", "blue", "square"]
    assert cells["none"]["losses"] == {}
    guided = [step for step, _ in cells["syngen"]["losses"]["syngen"]]
    assert guided and guided == sorted(guided) and set(guided) <= set(range(total))
    assert {"syngen.pos", "syngen.neg"} <= set(cells["syngen"]["losses"])


def test_map_images_follow_the_step_and_the_method(client, job):
    base = f"/api/jobs/{job['id']}"
    first, last = png(client.get(f"{base}/map/syngen/0/1.png")), png(client.get(f"{base}/map/syngen/{STEPS - 1}/1.png"))
    assert first.shape == last.shape and not np.array_equal(first, last)
    unguided = png(client.get(f"{base}/map/syngen/1/1.png?mode=unguided"))
    assert np.array_equal(unguided, png(client.get(f"{base}/map/none/1/1.png")))
    compare = png(client.get(f"{base}/map/syngen/1/1.png?mode=compare&alpha=0.7"))
    assert compare.shape == first.shape and not np.array_equal(compare, first)
    assert client.get(f"{base}/map/syngen/99/0.png").status_code == 404
    assert client.get(f"{base}/map/syngen/0/9.png").status_code == 404
    assert client.get(f"{base}/map/syngen/0/0.png?alpha=2").status_code == 400


def test_images_and_sheets_export_as_png(client, job):
    base = f"/api/jobs/{job['id']}"
    image = png(client.get(f"{base}/image/syngen.png"))
    assert image.shape[:2] == (64, 64)
    one = png(client.get(f"{base}/sheet/syngen.png?steps=1"))
    two = png(client.get(f"{base}/sheet/syngen.png?steps=0,1"))
    assert two.shape[1] > one.shape[1]  # one column per step
    assert client.get(f"{base}/image/astar.png").status_code == 404


def test_the_exported_recipe_validates_and_attnguide_run_reproduces_the_images(client, job, tmp_path):
    response = client.get(f"/api/jobs/{job['id']}/recipe.yaml")
    assert response.headers["content-disposition"] == 'attachment; filename="explore.yaml"'
    path = tmp_path / "explore.yaml"
    path.write_text(response.text)
    assert response.text.startswith("# attnguide run explore.yaml")
    loaded = load_recipe(str(path))
    assert [c.labels["method"] for c in loaded.cells] == ["none", "syngen"]
    assert loaded.prompts == [PROMPT] and loaded.seeds == [0]
    assert main(["validate", str(path)]) == 0
    assert main(["run", str(path), f"output_dir={tmp_path / 'out'}", "--quiet"]) == 0
    for label in ("none", "syngen"):
        written = next((tmp_path / "out" / "explore" / f"method-{label}").glob("*[0-9].png"))
        shown = png(client.get(f"/api/jobs/{job['id']}/image/{label}.png"))
        assert np.array_equal(np.asarray(Image.open(written).convert("RGB")), shown), label


def test_a_generation_with_edited_bindings_binds_as_edited_and_exports_them(client):
    edited = {"square": ["red"]}
    body = {"prompt": PROMPT, "steps": 2, "parser": "manual", "bindings": edited, "methods": [{"name": "none"}]}
    status = wait_for(client, client.post("/api/generate", json=body).json()["id"])
    assert status["state"] == "done", status["error"]
    assert status["cells"][0]["words"] == ["red", "square"]
    recipe = load_recipe_text(client.get(f"/api/jobs/{status['id']}/recipe.yaml").text)
    assert recipe["parser"] == {"name": "manual", "bindings": edited}


def load_recipe_text(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


def test_generations_queue_while_one_runs_and_never_overlap(client, session):
    body = {"prompt": PROMPT, "steps": 2, "methods": [{"name": "none"}]}
    with session.generation_lock:  # as if a generation were running
        ids = [client.post("/api/generate", json=body).json()["id"] for _ in range(2)]
        time.sleep(0.3)
        assert [client.get(f"/api/jobs/{i}").json()["state"] for i in ids] == ["queued", "queued"]
    runs = sorted((s["started_at"], s["finished_at"]) for s in (wait_for(client, i) for i in ids))
    assert runs[0][1] <= runs[1][0], f"the generations overlapped: {runs}"


def test_an_unknown_job_is_a_404(client):
    assert client.get("/api/jobs/nope").status_code == 404
