"""python -m deployments.inference.prepare: what deploy/Dockerfile runs to convert the models a
config serves at build time, so that replicas start on a warm cache."""

from deployments.inference.prepare import main


def test_it_converts_each_model_served_with_openvino_and_leaves_torch_ones_alone(tmp_path, monkeypatch, capsys):
    config = tmp_path / "serve_config.yaml"
    config.write_text("""
applications:
  - name: image-classifier
    import_path: serve_app.app:build_app
    args:
      models:
        - {name: efficientnet-lite0, source: efficientnet-lite0, default: true}
        - {name: efficientnet-lite1, source: efficientnet-lite1, runtime: torch}
""")
    compiled = tmp_path / "compiled-models"
    monkeypatch.setenv("COMPILED_MODEL_DIR", str(compiled))
    main([str(config)])
    assert [p.parent.name.split("-openvino-")[0] for p in compiled.glob("*/model.xml")] == ["efficientnet-lite0"]
    assert f"1 model(s) ready in {compiled}: efficientnet-lite0" in capsys.readouterr().out
