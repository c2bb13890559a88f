"""A small hand-made concept set for ICL tests that must not depend on the built-in data files."""

from __future__ import annotations

from mcicl.probing.datasets.concepts import ConceptSet

SMALL_CONCEPTS = {
    "animal": ["dog", "cat", "horse", "lion", "tiger", "cow", "sheep", "wolf", "rabbit", "goat", "deer", "zebra"],
    "vehicle": ["car", "bus", "truck", "train", "bicycle", "tractor", "van", "taxi", "tram", "scooter", "lorry",
                "motorcycle"],
    "fruit": ["banana", "grape", "pear", "peach", "plum", "cherry", "mango", "lemon", "melon", "kiwi", "apricot",
              "papaya"],
    "furniture": ["chair", "table", "sofa", "desk", "bed", "shelf", "stool", "cabinet", "dresser", "bench",
                  "wardrobe", "couch"],
    "sports_equipment": ["racket", "helmet", "ball", "glove", "skis", "puck", "net", "paddle", "dumbbell", "cleats",
                         "skateboard", "javelin"],
    "colour": ["red", "blue", "green", "yellow", "purple", "pink", "brown", "grey", "violet", "crimson", "beige",
               "turquoise"],
}
SMALL_POLYSEMY = {"bat": ["animal", "sports_equipment"], "orange": ["fruit", "colour"],
                  "club": ["sports_equipment", "furniture"], "jaguar": ["animal", "vehicle"]}


def small_concept_set() -> ConceptSet:
    """Six concepts of twelve monosemous words, four polysemous words."""
    return ConceptSet("icl-test", {c: list(ws) for c, ws in SMALL_CONCEPTS.items()}, dict(SMALL_POLYSEMY))
