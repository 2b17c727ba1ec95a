"""The registry is the one place that names methods and gives them ids."""
from dcomp import registry


def test_ids_are_unique_and_codecs_carry_the_registry_name_and_id():
    ids = [entry[0] for entry in registry.METHODS.values()]
    assert len(set(ids)) == len(ids)
    for name, (method_id, *_rest) in registry.METHODS.items():
        codec = registry.get(name)
        assert (codec.name, codec.method_id) == (name, method_id)
        assert registry.by_id(method_id) is codec


def test_every_method_names_its_bitstream():
    bitstreams = {name: registry.get(name).bitstream for name in registry.names()}
    assert bitstreams["gan-ae"] == bitstreams["gan-ae-dc"] == bitstreams["cnn-ae-ft"] == "cnn-ae-ft"
    assert bitstreams["mlp"] == "mlp" and bitstreams["cnn-ae"] == "cnn-ae"
