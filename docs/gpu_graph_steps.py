"""The script that produced the graph rows of docs/gpu.json on the H100 lease of 2026-11-26,
its code kept verbatim for provenance (run as `OUT=DIR python3 docs/gpu_graph_steps.py` at commit 1a3118f,
where graph_config gave Inference max_ongoing_requests 16 at both batch sizes). The maintained way
to rerun it is `python -m loadtests.bench --device cuda --batch 16` on a pip-installed checkout.
"""
import argparse, asyncio, json, os, subprocess, sys, time, glob
from pathlib import Path
import requests, yaml
sys.path.insert(0, os.getcwd())
from loadtests.bench import closed_loop, graph_config
from loadtests.service import interrupt_and_wait

OUT = Path(os.environ["OUT"])
cfg_path = OUT / "cfg.yaml"

def start(batch, tag):
    config = graph_config(argparse.Namespace(serve_env=[], device="cuda", batch=16))
    cfg_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "ENABLE_MODEL_CACHE": "false", "MODEL_DEVICE": "cuda", "MODEL_MAX_BATCH_SIZE": str(batch)}
    log = open(OUT / f"serve_{tag}.log", "w")
    p = subprocess.Popen(["serve", "run", str(cfg_path)], env=env, stdout=log, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 170:
        if p.poll() is not None:
            print(tag, "serve run exited", p.returncode, flush=True); return p, False
        try:
            if requests.get("http://127.0.0.1:8000/readyz", timeout=5).status_code == 200:
                print(tag, f"ready after {time.monotonic() - t0:.0f} s", flush=True); return p, True
        except requests.RequestException:
            pass
        time.sleep(2)
    return p, False

def dump(tag):
    st = subprocess.run(["serve", "status"], capture_output=True, text=True, timeout=60)
    (OUT / f"status_{tag}.txt").write_text(st.stdout + st.stderr)
    print(st.stdout[-3000:], st.stderr[-1000:], flush=True)
    lines = []
    for f in glob.glob("/tmp/ray/session_latest/logs/**/*", recursive=True):
        if os.path.isfile(f) and (f.endswith(".log") or f.endswith(".err") or f.endswith(".out")):
            for line in open(f, errors="replace"):
                if any(w in line for w in ("Error", "Traceback", "ERROR", "Exception", "pending", "PENDING")):
                    lines.append(f"{os.path.basename(f)}: {line.rstrip()[:400]}")
    (OUT / f"errors_{tag}.txt").write_text("\n".join(lines[-400:]))
    print("\n".join(lines[-40:]), flush=True)

results = {}
for batch in (1, 16):
    tag = f"b{batch}"
    p, ok = start(batch, tag)
    try:
        if not ok:
            dump(tag); break
        for c in ((1, 32) if batch == 1 else (32,)):
            r = asyncio.run(closed_loop("http://127.0.0.1:8000", c, 10, 6, 0.0, f"graph cuda batch {batch}, {c} conn"))
            results[r.label] = r.__dict__; print(json.dumps(r.__dict__), flush=True)
        if batch == 16:
            dump(tag)
    finally:
        interrupt_and_wait(p)
(OUT / "gpu_graph.json").write_text(json.dumps(results, indent=2))
