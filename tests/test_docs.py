"""The OpenAPI document and Swagger UI, and the documentation of every setting."""

from __future__ import annotations

import re
from pathlib import Path

from openapi_spec_validator import validate

from videosvc.config import Settings, load_settings, setting_names

from .helpers import Client

ROOT = Path(__file__).resolve().parent.parent


async def test_openapi_documents_every_route_with_its_errors(client: Client) -> None:
    response = await client.get("/swagger.json")
    assert response.status == 200
    spec = await response.json()
    assert spec["openapi"].startswith("3.")
    operations = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert operations == {
        ("/file/", "get"),
        ("/file/", "post"),
        ("/file/{id}/", "get"),
        ("/file/{id}/", "patch"),
        ("/file/{id}/", "delete"),
        ("/file/{id}/content", "get"),
        ("/file/{id}/events", "get"),
        ("/file/{id}/poster.jpg", "get"),
        ("/file/{id}/storyboard.vtt", "get"),
        ("/file/{id}/storyboard.jpg", "get"),
        ("/file/{id}/thumbnail.{format}", "get"),
        ("/file/{id}/hls/{path}", "get"),
        ("/file/{id}/hls/s/{expires}.{signature}/{path}", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/uploads/", "options"),
        ("/uploads/", "post"),
        ("/uploads/{id}", "options"),
        ("/uploads/{id}", "head"),
        ("/uploads/{id}", "patch"),
        ("/uploads/{id}", "delete"),
        ("/uploads/{id}", "post"),
    }
    expected_errors = {
        ("/file/", "get"): {"400", "500"},
        ("/file/", "post"): {"400", "408", "413", "415", "507", "500"},
        ("/file/{id}/", "patch"): {"400", "404", "408", "409", "429", "503", "500"},
        ("/file/{id}/", "get"): {"404", "500"},
        ("/file/{id}/", "delete"): {"404", "500"},
        ("/file/{id}/content", "get"): {"403", "404", "416", "500"},
        ("/file/{id}/events", "get"): {"403", "404", "429", "503", "500"},
        ("/file/{id}/hls/{path}", "get"): {"403", "404", "416", "500"},
        ("/file/{id}/poster.jpg", "get"): {"403", "404", "416", "500"},
        ("/file/{id}/storyboard.vtt", "get"): {"403", "404", "500"},
        ("/file/{id}/thumbnail.{format}", "get"): {"400", "403", "404", "406", "416", "429", "507", "500"},
        ("/file/{id}/hls/s/{expires}.{signature}/{path}", "get"): {"403", "404", "416", "500"},
        ("/uploads/", "post"): {"400", "412", "413", "415", "429", "507", "500"},
        ("/uploads/{id}", "patch"): {"400", "403", "404", "409", "410", "412", "413", "415", "460", "500"},
    }
    for (path, method), errors in expected_errors.items():
        responses = spec["paths"][path][method]["responses"]
        assert {"200", "201", "204"} & set(responses), (path, method)
        assert errors <= set(responses), (path, method)
        for status in errors:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}

    patch = spec["paths"]["/file/{id}/"]["patch"]
    body = patch["requestBody"]["content"]["application/json"]["schema"]
    resize = spec["components"]["schemas"]["ResizeRequest"]
    assert body == {"$ref": "#/components/schemas/ResizeRequest"}
    assert set(resize["required"]) == {"width", "height"}
    assert resize["properties"]["width"]["type"] == "integer"
    upload_body = spec["paths"]["/file/"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "video/mp4"} <= set(upload_body)
    info = spec["components"]["schemas"]["FileInfo"]
    assert {"id", "filename", "processing", "processingSuccess"} <= set(info["required"])


async def test_the_served_document_is_valid_openapi_3_with_links_from_upload(make_client) -> None:
    for keys in ((), ("secret",)):
        client = await make_client(api_keys=keys)
        spec = await (await client.get("/swagger.json")).json()
        validate(spec)  # raises on anything OpenAPI 3 does not allow (e.g. Swagger 2's `produces`)
        links = spec["paths"]["/file/"]["post"]["responses"]["200"]["links"]
        operation_ids = {op.get("operationId") for item in spec["paths"].values() for op in item.values()}
        assert {"getFile", "resizeFile", "deleteFile", "getFileContent"} <= set(links) <= operation_ids
        assert links["getFile"]["parameters"] == {"id": "$response.body#/id"}
        # /health never needs a key, and says so when keys are set.
        assert spec["paths"]["/health"]["get"]["security"] == []
        assert "401" not in spec["paths"]["/health"]["get"]["responses"]
        # The documented range of progress is the one the code keeps to.
        progress = spec["components"]["schemas"]["FileInfo"]["properties"]["progress"]
        assert (progress["minimum"], progress["maximum"]) == (0, 99)


async def test_swagger_ui_is_served_and_the_page_links_to_it(client: Client) -> None:
    response = await client.get("/swagger/", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/swagger"
    page = await (await client.get("/")).text()
    assert 'href="/swagger"' in page
    response = await client.get("/swagger/")
    assert response.status == 200 and "swagger" in (await response.text()).lower()


async def test_swagger_ui_is_served(client: Client) -> None:
    response = await client.get("/swagger")
    assert response.status == 200
    assert "swagger" in (await response.text()).lower()


async def test_security_scheme_is_documented_when_keys_are_set(make_client) -> None:
    client = await make_client(api_keys=("secret",))
    spec = await (await client.get("/swagger.json")).json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearerAuth": []}]


def test_config_toml_documents_every_setting_with_its_default() -> None:
    text = (ROOT / "config.toml").read_text()
    for name in setting_names():
        match = re.search(rf"^{name} = ", text, re.M)
        assert match, f"{name} is not in config.toml"
        preceding = text[: match.start()].rstrip().splitlines()[-1]
        assert preceding.startswith("#"), f"{name} has no comment above it in config.toml"
    # The shipped file changes nothing: its values are the defaults.
    assert load_settings(ROOT / "config.toml", env={}) == Settings()


def test_the_configuration_page_documents_every_setting() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in setting_names() if f"| `{name}` |" not in page]
    assert missing == []


def test_every_local_link_in_the_docs_leads_somewhere() -> None:
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "bench" / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"


async def test_health_answers_without_a_key(make_client) -> None:
    client = await make_client(api_keys=("secret",))
    response = await client.get("/health")
    assert (response.status, await response.json()) == (
        200,
        {"status": "ok", "problems": [], "activeJobs": 0},
    )


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    command = ci[-1]
    assert "python -m pytest" in command
    assert f"\n{command}\n" in readme, "the README's test command and .ci/run differ"
