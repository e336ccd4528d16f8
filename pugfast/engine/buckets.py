"""The latency histograms' bucket layout: HdrHistogram's, for two significant decimal digits and
a lowest discernible value of 1.

Values below 256 have a bucket each; above that every power of two is split into 128 equal
buckets, so a bucket is at most 1/128 of its values wide (under 1%). The load generator's
``DeliveryTally`` (``_sink``, and its compiled twin, which spells the same numbers in C) counts
into buckets of this layout, and pugfast.bench.histogram keeps, merges and reports them.
"""

# 2**SUB_BITS buckets per power of two above the LINEAR values that have a bucket each.
SUB_BITS = 7
LINEAR = 2 << SUB_BITS
# Enough buckets for every value below 2**63.
BUCKETS = (63 - SUB_BITS) * (1 << SUB_BITS) + LINEAR


def bucket_index(value: int) -> int:
    """The bucket ``value`` (a non-negative integer below 2**63) falls in."""
    if value < LINEAR:
        return value if value > 0 else 0
    shift = value.bit_length() - SUB_BITS - 1
    return (shift << SUB_BITS) + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value of bucket ``index``."""
    if index < LINEAR:
        return index, index
    shift = (index >> SUB_BITS) - 1
    mantissa = index - (shift << SUB_BITS)
    return mantissa << shift, ((mantissa + 1) << shift) - 1
