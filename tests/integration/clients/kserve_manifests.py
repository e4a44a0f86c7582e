"""KServe objects through the KServe SDK's own models: no key lost or misspelt.

`python kserve_manifests.py FILE...`: each YAML document of a KServe kind is read into the SDK's
model (V1alpha1ClusterServingRuntime, V1beta1InferenceService, whose containers and probes are
the Kubernetes client's models) and written back; a key the models do not know is dropped on
the way, so the two must be equal. Prints `ok KIND NAME`, or `lost KIND NAME: ...` with what
differs.
"""

import re
import sys

import kserve.models
import kubernetes.client.models
import yaml
from kserve import ApiClient

MODELS = {
    "ClusterServingRuntime": "V1alpha1ClusterServingRuntime",
    "ServingRuntime": "V1alpha1ServingRuntime",
    "InferenceService": "V1beta1InferenceService",
}
PLAIN = {"str", "int", "float", "bool", "object", "datetime", "date"}


def read(data, kind):
    """`data` as the SDK's model `kind` (kserve's, or the Kubernetes client's for core types),
    by the models' own attribute maps, as their ApiClient reads a server's answer."""
    if data is None or kind in PLAIN:
        return data
    listed = re.fullmatch(r"[lL]ist\[(.+)\]", kind)
    if listed:
        return [read(item, listed[1]) for item in data]
    mapped = re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", kind)
    if mapped:
        return {key: read(value, mapped[1] or mapped[2]) for key, value in data.items()}
    model = getattr(kserve.models, kind, None) or getattr(kubernetes.client.models, kind)
    types = model.openapi_types
    return model(
        **{
            attribute: read(data[key], types[attribute])
            for attribute, key in model.attribute_map.items()
            if key in data
        }
    )


def differences(original, back, path="$"):
    """Where `back` differs from `original`, as JSON-ish paths."""
    if isinstance(original, dict) and isinstance(back, dict):
        found = []
        for key in sorted(set(original) | set(back)):
            if key not in back:
                found.append(f"{path}.{key} lost")
            elif key not in original:
                if back[key] not in ("", [], {}, None):  # a model's default is no change
                    found.append(f"{path}.{key} added")
            else:
                found += differences(original[key], back[key], f"{path}.{key}")
        return found
    if isinstance(original, list) and isinstance(back, list) and len(original) == len(back):
        return [d for i, (a, b) in enumerate(zip(original, back)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if original == back else [f"{path}: {original!r} became {back!r}"]


def main() -> None:
    client = ApiClient()
    for file in sys.argv[1:]:
        with open(file, encoding="utf-8") as stream:
            for document in yaml.safe_load_all(stream):
                kind, name = document["kind"], document["metadata"]["name"]
                model = read(document, MODELS[kind])
                back = client.sanitize_for_serialization(model)
                lost = differences(document, back)
                print(f"lost {kind} {name}: {'; '.join(lost)}" if lost else f"ok {kind} {name}")


main()
