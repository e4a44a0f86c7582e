"""blazerpc on Ray Serve: an app's models as replicated deployments, blazerpc's server in front.

`blaze ray app.py:app` is the command (`pip install 'blazerpc[ray]'`); this is its Python form,
for composing Ray apps of your own (docs/scale-out.md):

```python
with RayCluster("local"):
    deployment = RayDeployment("app.py:app", placement=Placement(replicas=2))
    async with deployment.server(port=50051) as server:  # deploys; draining deletes
        ...
```
"""

from blazerpc.ray.cluster import RayCluster
from blazerpc.ray.deployment import DEFAULT_NUM_CPUS, RayDeployment
from blazerpc.ray.replica import ModelReplica, current_model

__all__ = ("DEFAULT_NUM_CPUS", "ModelReplica", "RayCluster", "RayDeployment", "current_model")
