"""Re-registered routes: checked inputs, the thread-pool twin, and no second wrapping when the app is rebuilt."""

from fastapi import APIRouter, FastAPI, Form
from fastapi.testclient import TestClient

from lib.server_routes import check_infer_inputs, checked_in_thread_pool, replace_routes


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
