"""Re-registered routes: checked inputs, the thread-pool twin, and no second wrapping when the app is rebuilt."""

from fastapi import APIRouter, FastAPI, Form
from fastapi.testclient import TestClient

from lib.server_routes import (
    check_infer_inputs,
    check_json_body,
    checked,
    checked_in_thread_pool,
    install_validation_error_handler,
    replace_routes,
)


def test_a_route_replaced_twice_is_wrapped_once_and_checks_its_inputs():
    router = APIRouter(prefix="/infer")

    @router.post("/{model}")
    async def run_inference(model: str, image: str = "", params: str = Form("{}")):
        return {"model": model, "image": image}

    for _ in range(2):  # the app built again by MONAI Label's /reload
        replace_routes(router, lambda route: checked_in_thread_pool(route.endpoint, check_infer_inputs))
    assert len(router.routes) == 1 and router.routes[0].endpoint.seg3d_replaces is run_inference
    app = FastAPI()
    app.include_router(router)
    client = TestClient(app)
    assert client.post("/infer/sam3d", params={"image": "a"}).json() == {"model": "sam3d", "image": "a"}
    assert client.post("/infer/sam3d").status_code == 422
    refused = client.post("/infer/sam3d", params={"image": "a"}, data={"params": "[1]"})
    assert refused.status_code == 422 and "JSON object" in refused.text
    assert client.post("/infer/sam3d", params={"image": "a"}, data={"params": '{"x": NaN}'}).status_code == 422


def test_json_bodies_holding_nan_or_infinity_get_a_422_also_after_the_app_started():
    router = APIRouter(prefix="/activelearning")

    @router.post("/{strategy}")
    async def api_sample(strategy: str, params: dict | None = None):
        return {"strategy": strategy, "params": params}

    replace_routes(router, lambda route: checked(route.endpoint, check_json_body))
    app = FastAPI()
    app.include_router(router)
    json_body = {"Content-Type": "application/json"}
    # started: Starlette has built its middleware stack
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/activelearning/random", content="NaN", headers=json_body).status_code == 500
        install_validation_error_handler(app)
        install_validation_error_handler(app)  # MONAI Label's /reload builds the app again
        for body in ("NaN", "[Infinity]", "-Infinity", '{"client_id": NaN}', '{"a": [1, {"b": Infinity}]}'):
            response = client.post("/activelearning/random", content=body, headers=json_body)
            assert response.status_code == 422, body
            assert "NaN or Infinity" in response.json()["detail"]
        refused = client.post("/activelearning/random", content="[1]", headers=json_body)  # FastAPI's own answer
        assert refused.status_code == 422 and isinstance(refused.json()["detail"], list)
        assert client.post("/activelearning/random", json={"a": 1.5}).json() == {"strategy": "random",
                                                                                "params": {"a": 1.5}}
