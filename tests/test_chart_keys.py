"""The chart-key check itself: it must catch what a chart would silently ignore."""

from __future__ import annotations

from tests.chart_keys import ChartKeys, leaf_paths, load_all


def test_misspelt_or_misplaced_keys_are_caught() -> None:
    qdrant = load_all()["qdrant"]
    values = {"replicaCount": 3, "replicas": 3, "persistence": {"size": "1Gi", "storageClass": "x"}}
    unknown = [path for path in leaf_paths(values) if not qdrant.accepts(path)]
    assert unknown == ["replicas", "persistence.storageClass"]


def test_free_form_maps_accept_any_subtree_but_not_their_siblings() -> None:
    keys = ChartKeys(chart="c", version="1", source="s", keys=("resources.*", "image.tag"))
    assert keys.accepts("resources.limits.cpu")
    assert not keys.accepts("resourcesX.limits")
    assert not keys.accepts("image.repository")


def test_every_chart_keys_file_is_for_a_pinned_chart() -> None:
    from tenancy import versions

    pins = {pin.chart: pin.version for pin in vars(versions).values() if isinstance(pin, versions.ChartPin)}
    for chart, keys in load_all().items():
        assert pins.get(chart) == keys.version, chart
