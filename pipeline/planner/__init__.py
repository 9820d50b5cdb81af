"""The planner runtime: everything between a trained world model and a driven car.

- `onnx_export`: the torch planner (models/planner.py) written as ONNX and checked for parity;
- `scorer`: `OnnxScorer`, the ONNX file plus its JSON sidecar, served with numpy and
  onnxruntime only;
- `live_scene`: a running highway-env scene as the planner's ego-centric history;
- `decision`: the decision rule (risk budget, lambda, beta) over scored candidates;
- `policy`: `PlannerPolicy`, the planner driving the simulator, with its reality check and
  rule-based fallback;
- `lane_guard`: the optional gap check on the planner's first lane change;
- `batch_planner`: `BatchPlanner`, one `PlannerPolicy` per episode of an EnvPool batch;
- `actor_export`: the actor (encoder + actor head, models/actor.py) written as ONNX;
- `actor_runtime`: `ActorSession` (the ONNX actor and its sidecar), `ActorDriver` (the
  actor driving) and `ActorGuidedPlanner` (the planner scoring the actor's proposals).

Nothing here imports torch at module level except `onnx_export` and `actor_export`: the serving path
(`drivecast simulate`) needs numpy, onnxruntime and the simulator only.
"""
