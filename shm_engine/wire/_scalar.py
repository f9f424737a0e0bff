"""The scalar hot paths of the wire package: GENERATED from the rule table
by `shm_engine.wire.rulecode`, which says what each function does.  Do not
edit: run ``python -m shm_engine.wire`` after changing the table."""
# ruff: noqa: E501

import math
import re

_INF = math.inf
_ASCII_node = re.compile(b'[\\x2d-\\x3a\\x41-\\x5a\\x5f-\\x5f\\x61-\\x7a]{1,63}\\x00+').fullmatch
_ZERO_15 = bytes(64)
_NO_resources = (bytes(16),) * 8 + (0.0,) * 8
_ASCII_zone = re.compile(b'[\\x01-\\x7f]{0,31}\\x00+').fullmatch
_ZERO_16 = bytes(32)
_ZERO_12 = bytes(1)
_ZERO_14 = bytes(4)
_ZERO_17 = bytes(8)


def accept(v, slow_ok):
    f = v[11]
    return ((_ASCII_node(v[15]) is not None)
            and not f & 0x00
            and 0.0 <= v[0] <= 1.0
            and 0.0 <= v[1] <= 1.0
            and 0.0 <= v[2] < _INF
            and 0.0 <= v[3] < _INF
            and ((0.0 <= v[4] < _INF) if f & 0x01 else v[4] == 0)
            and ((True) if f & 0x02 else v[9] == 0 and v[10] == 0)
            and ((0.0 <= v[5] <= 1.0) if f & 0x04 else v[5] == 0)
            and ((0.0 < v[6] < _INF and 0.0 < v[7] < _INF and v[6] <= v[7]) if f & 0x08 else v[6] == 0 and v[7] == 0)
            and ((1 <= v[13] <= 65535) if f & 0x40 else v[13] == 0)
            and (slow_ok(11, v) if f & 0x80 else v[18:34] == _NO_resources)
            and ((-_INF < v[8] < _INF) if f & 0x10 else v[8] == 0)
            and ((_ASCII_zone(v[16]) is not None or slow_ok(13, v[16])) if f & 0x20 else v[16] == _ZERO_16)
            and v[12] == _ZERO_12 and v[14] == _ZERO_14 and v[17] == _ZERO_17
    )


def one(v):
    return v[0:12] + v[13:14] + (v[15].rstrip(b'\0'), v[16].rstrip(b'\0'), v[18].rstrip(b'\0'), v[19].rstrip(b'\0'), v[20].rstrip(b'\0'), v[21].rstrip(b'\0'), v[22].rstrip(b'\0'), v[23].rstrip(b'\0'), v[24].rstrip(b'\0'), v[25].rstrip(b'\0'),) + v[26:34]


def json_fields(obj, values, read):
    flags = 0
    labels = None
    x = obj['cpu']
    values[0] = x if type(x) is float and 0.0 <= x <= 1.0 else read['cpu'](obj, values)
    x = obj['mem']
    values[1] = x if type(x) is float and 0.0 <= x <= 1.0 else read['mem'](obj, values)
    x = obj['queue']
    values[2] = x if type(x) is float and 0.0 <= x < _INF else read['queue'](obj, values)
    x = obj['avg_job_s']
    values[3] = x if type(x) is float and 0.0 <= x < _INF else read['avg_job_s'](obj, values)
    if 'throughput' in obj:
        x = obj['throughput']
        values[4] = x if type(x) is float and 0.0 <= x < _INF else read['throughput'](obj, values)
        flags |= 0x01
    if 'ok' in obj:
        x = obj['ok']
        values[9] = x if type(x) is int and 0 <= x <= 4294967295 else read['ok'](obj, values)
        x = obj['err']
        values[10] = x if type(x) is int and 0 <= x <= 4294967295 else read['err'](obj, values)
        flags |= 0x02
    if 'io' in obj:
        x = obj['io']
        values[5] = x if type(x) is float and 0.0 <= x <= 1.0 else read['io'](obj, values)
        flags |= 0x04
    if 'p50_ms' in obj:
        x = obj['p50_ms']
        values[6] = x if type(x) is float and 0.0 < x < _INF else read['p50_ms'](obj, values)
        x = obj['p95_ms']
        values[7] = x if type(x) is float and 0.0 < x < _INF and x >= values[6] else read['p95_ms'](obj, values)
        flags |= 0x08
    if 'slots' in obj:
        x = obj['slots']
        values[12] = x if type(x) is int and 1 <= x <= 65535 else read['slots'](obj, values)
        flags |= 0x40
    if 'resources' in obj:
        read['resources'](obj, values)
        flags |= 0x80
    if 'ts' in obj:
        x = obj['ts']
        values[8] = x if type(x) is float and -_INF < x < _INF else read['ts'](obj, values)
        flags |= 0x10
    if 'zone' in obj:
        values[14] = read['zone'](obj, values)
        flags |= 0x20
    if 'labels' in obj:
        labels = read['labels'](obj, values)
    if 'taints' in obj:
        labels = read['taints'](obj, labels)
    values[11] = flags
    return labels
