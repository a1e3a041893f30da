"""The registry: every op type has one quantizer, and every quantizer declares all its parts."""

from kquant.quantization.ops import BY_OP_TYPE, QUANTIZERS, OpQuantizer


def test_each_op_type_is_claimed_by_exactly_one_family():
    op_types = [op for quantizer in QUANTIZERS for op in quantizer.op_types]
    assert len(op_types) == len(set(op_types)) == len(BY_OP_TYPE)
    assert len({q.family for q in QUANTIZERS}) == len(QUANTIZERS) and all(q.family for q in QUANTIZERS)


def test_every_family_declares_its_pattern_and_lowerings():
    for quantizer in QUANTIZERS:
        for part in ("match", "lower", "qdq"):
            assert getattr(type(quantizer), part) is not getattr(OpQuantizer, part), (quantizer.family, part)
