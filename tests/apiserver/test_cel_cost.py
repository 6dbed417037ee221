"""The CEL cost budget (raw HTTP): a CRD whose rule could cost too much on the largest
object its schema allows is refused with kube's message (one rule; all rules of the
schema; a result of unknown size), and bounded it is accepted; at runtime a rule over
the per-call limit, the rules of one object over the budget, and a
ValidatingAdmissionPolicy expression over the limit are refused as kube refuses them,
counted from what ran (celtrace), and smaller objects pass."""

from __future__ import annotations

from typing import Any

from gpuyard.apiserver import celcost, celtrace

from .api import Api
from .test_admission_policy import ADM, binding

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
THINGS = "/apis/example.com/v1/namespaces/default/things"
ROOT = "spec.validation.openAPIV3Schema"  # one version: kube names the top-level schema
ADVICE = (
    "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where "
    "arrays, maps, and strings are declared)"
)


def crd(spec_props: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {"type": "object", "properties": spec_props}},
                        }
                    },
                }
            ],
        },
    }


def rules(*exprs: str) -> list[dict[str, str]]:
    return [{"rule": e} for e in exprs]


async def test_a_rule_too_expensive_for_its_schema_is_refused(api: Api) -> None:
    words = {
        "type": "array",
        "items": {"type": "string"},
        "x-kubernetes-validations": rules("self.all(w, w.matches('^[a-z]+$'))"),
    }
    st, err = await api.post(CRDS, crd({"words": words}))
    assert st == 422, err
    field = f"{ROOT}.properties[spec].properties[words].x-kubernetes-validations[0].rule"
    causes = {(c["field"], c["message"]) for c in err["details"]["causes"]}
    assert (
        field,
        f"Forbidden: estimated rule cost exceeds budget by factor of more than 100x {ADVICE}",
    ) in causes
    assert all(c["reason"] == "FieldValueForbidden" for c in err["details"]["causes"])
    assert (await api.get(f"{CRDS}/things.example.com"))[0] == 404
    # Bounded as the message says, the same rule is accepted.
    words["maxItems"] = 32
    words["items"] = {"type": "string", "maxLength": 64}
    st, out = await api.post(CRDS, crd({"words": words}))
    assert st == 201, out


async def test_a_string_bound_counts_four_bytes_a_character(api: Api) -> None:
    # kube's estimate of self.all(x, x.contains('a')) over 100,000 strings of at most 250
    # characters: 2 + 100,000 * (3 per iteration + 1 for x + 1,000 bytes / 10) = 10,400,002.
    names = {
        "type": "array",
        "maxItems": 100_000,
        "items": {"type": "string", "maxLength": 250},
        "x-kubernetes-validations": rules("self.all(x, x.contains('a'))"),
    }
    st, err = await api.post(CRDS, crd({"names": names}))
    assert st == 422, err
    field = f"{ROOT}.properties[spec].properties[names].x-kubernetes-validations[0].rule"
    assert {
        "reason": "FieldValueForbidden",
        "message": "Forbidden: estimated rule cost exceeds budget by factor of 1.040000x " + ADVICE,
        "field": field,
    } in err["details"]["causes"]
    names["items"]["maxLength"] = 200  # 8,400,002: within the limit
    st, out = await api.post(CRDS, crd({"names": names}))
    assert st == 201, out


def test_estimates_match_kube_figures() -> None:
    """Figures of kube-apiserver's estimator for CRD rules (its own cost tests, with
    the schemas they use: unbounded, or bounded as each test bounds them)."""

    def est(schema: dict[str, Any], rule: str) -> int:
        shape = celcost.from_schema(schema)
        return celcost.estimate(celcost.parse(rule), {"self": shape, "oldSelf": shape})

    def items(t: str, **bound: int) -> dict[str, Any]:
        return {"type": "array", "items": {"type": t}, **bound}

    def text(**bound: Any) -> dict[str, Any]:
        return {"type": "string", **bound}

    def strings(**bound: int) -> dict[str, Any]:
        return {"type": "array", "items": text(maxLength=10), **bound}

    def fields(**props: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": props}

    def values(t: str, **bound: Any) -> dict[str, Any]:
        extra = {k: v for k, v in bound.items() if k == "format"}
        limits = {k: v for k, v in bound.items() if k != "format"}
        return {"type": "object", "additionalProperties": {"type": t, **extra}, **limits}

    split = "self.str.split(self.separator) == []"
    replace = "self.str.replace(self.before, self.after) == 'does not matter'"

    every = "self.all(x, true)"
    concat = 'size(self + "hello") > size("hello")'
    cases = [
        (items("number"), every, 4_718_591),
        (items("number", maxItems=10), every, 32),
        (items("string"), every, 3_145_727),
        (items("boolean"), every, 1_887_437),
        (values("number"), every, 1_348_169),
        (values("string"), every, 1_179_647),
        (values("number", maxProperties=10), every, 32),
        (items("number", maxItems=10), "self.all(x, self.all(y, true))", 352),
        (items("number", maxItems=10), "self.all(x, self.all(y, self.all(z, true)))", 3552),
        (text(), "self.contains('test')", 314_574),
        (text(maxLength=10), "self.contains('test')", 5),
        (text(), "self.startsWith('test')", 2),
        (text(), concat, 314_578),
        (text(maxLength=4), concat, 7),
        (text(), 'self.matches("x")', 314_574),
        (text(maxLength=0), 'self == "x"', 1),
        (items("string", maxItems=8), "self[1] == self[1]", 314_577),
        # library functions
        (text(), "self.lowerAscii() == 'lower!'", 314_575),
        (text(maxLength=10), "self.lowerAscii() == 'lower!'", 6),
        (fields(str=text(), separator=text()), "self.str.split(self.separator) == []", 629_160),
        (fields(str=text(maxLength=10), separator=text(maxLength=10)), split, 22),
        (items("string"), "self.join(' ') == 'aa bb'", 329_853_068_905),
        (strings(maxItems=10), "self.join(' ') == 'aa bb'", 43),
        (items("string"), "self.isSorted() == true", 329_854_432_052),
        (strings(maxItems=10), "self.isSorted() == true", 52),
        (fields(str=text(), before=text(maxLength=2), after=text(maxLength=4)), replace, 629_154),
        (
            fields(str=text(maxLength=4), before=text(maxLength=2), after=text(maxLength=4)),
            replace,
            12,
        ),
        (text(), "self.find('[0-9]+') == ''", 629_147),
        (text(maxLength=10), "self.find('[0-9]+') == ''", 11),
        (text(maxLength=50), 'self.matches("x")', 22),
        (text(), '"".matches("(((((((((())))))))))[0-9]")', 7),
        (values("string"), "self.all(x, x.contains(self[x]))", 2_752_507),
        (text(enum=["A", "B", "C", "LongValue"]), "self.contains('A')", 2),
        (values("integer"), "oldSelf.size() == self.size()", 5),
        (values("string", format="date-time"), 'self["a"] == self["b"]', 8),
        # comparing numbers: one read from the schema has size 0, one written or computed 1
        (items("number"), "self[1] == 0.0", 2),
        (items("number"), "self.all(x, x == 0.0)", 6_291_454),
        (items("boolean"), "self[0] == false", 2),
        ({"type": "array", "items": values("number")}, "self.all(x, x.y == 25.2)", 6_291_452),
        ({"type": "array", "items": values("number")}, "self[0].x > 2.0", 4),
        ({"type": "array", "items": {"x-kubernetes-int-or-string": True}}, "self[0] == 5", 3),
    ]
    assert [est(s, r) for s, r, _ in cases] == [want for _, _, want in cases]
    # kube's library figures for expressions of literals (quantities, semver, lists). A
    # quantity has no size kube's estimator knows, so comparing two is costed as
    # comparing values of the largest size (2^64 - 1 tenths, as a float rounds it).
    library = [
        ('quantity("12Mi")', 1),
        ('quantity("200M") == quantity("200M")', 1_844_674_407_370_955_266),
        (
            'quantity("200M") == quantity("0.2G") && quantity("0.2G") == quantity("200M")',
            3_689_348_814_741_910_532,
        ),
        ('quantity("50k").add(quantity("20")) == quantity("50.02k")', 1_844_674_407_370_955_268),
        ('quantity("50k").sub(20) == quantity("49980")', 1_844_674_407_370_955_267),
        ('quantity("50Mi").isGreaterThan(quantity("50M"))', 3),
        ('quantity("50k").add(20).sub(quantity("100k")).sub(-50000).asInteger() > 0', 7),
        (
            "'ABCDEFGHIJ abcdefghij'.lowerAscii() == 'abcdefghij ABCDEFGHIJ'.lowerAscii()",
            9,
        ),
        ('semver("1234.56789012345.67890123456789")', 4),
        ("[1, 2, 3, 4, 5].sum()", 15),
        (
            "['012345678901', '012345678901', '012345678901', '012345678901', "
            "'012345678901'].isSorted()",
            25,
        ),
        ("'01234567890123456789012345678901234567890123456789'.indexOf('123')", 5),
    ]
    assert [celcost.estimate(celcost.parse(e), {}) for e, _ in library] == [
        want for _, want in library
    ]
    # A computed value of no known size: string(x) and functions without a size of their
    # own are costed at the largest size wherever their size counts (kube refuses such
    # rules), and cost nothing more where it does not (compared with a literal, sized).
    labels = fields(n={"type": "integer"}, s=text(maxLength=10))
    unknown = [
        ("'n is ' + string(self.n)", 1_844_674_407_370_955_264 + 3),
        ("string(self.n).contains('1')", 1_844_674_407_370_955_264 + 3),
        ("string(self.n).matches('[a-z]')", 1_844_674_407_370_955_264 * 2 + 3),
        ("string(self.n) == '5'", 4),
        ("size(string(self.n)) < 3", 5),
        ("'n is %d'.format([self.n])", 1 + 10 + 2),
    ]
    assert [est(labels, r) for r, _ in unknown] == [want for _, want in unknown]


async def test_rules_too_expensive_all_together_are_refused(api: Api) -> None:
    grid = {
        "type": "array",
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"x": {"type": "integer"}},
                "x-kubernetes-validations": rules("self.x > 0"),
            },
        },
    }
    st, err = await api.post(CRDS, crd({"grid": grid}))
    assert st == 422, err
    causes = {(c["field"], c["message"]) for c in err["details"]["causes"]}
    rule = f"{ROOT}.properties[spec].properties[grid].items.items.x-kubernetes-validations[0].rule"
    assert (
        rule,
        "Forbidden: contributed to estimated rule cost total exceeding cost limit for entire "
        "OpenAPIv3 schema",
    ) in causes
    assert (
        ROOT,
        "Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 "
        f"schema exceeds budget by factor of more than 100x {ADVICE}",
    ) in causes
    # One evaluation of the rule is cheap: no cause says so.
    assert not any("estimated rule cost exceeds" in m for _, m in causes)


def thing(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Thing",
        "metadata": {"name": name},
        "spec": spec,
    }


async def test_runtime_cost_limit_and_budget(api: Api) -> None:
    nums = {"type": "array", "items": {"type": "integer"}}
    many = {"type": "array", "items": {"type": "integer"}}
    props = {
        "nums": {**nums, "x-kubernetes-validations": rules("self.all(n, n > 0)")},
        "many": {
            **many,
            "x-kubernetes-validations": rules(*(f"self.all(n, n != {i})" for i in range(11))),
        },
    }
    st, out = await api.post(CRDS, crd(props))
    assert st == 201, out  # each rule's estimate is within the limit

    st, out = await api.post(THINGS, thing("small", nums=[1] * 1000, many=[100] * 1000))
    assert st == 201, out

    # One rule over the per-call limit on a large list.
    st, err = await api.post(THINGS, thing("long", nums=[1] * 400_000))
    assert st == 422, err
    (cause,) = err["details"]["causes"]
    assert cause["field"] == "spec.nums"
    assert cause["message"] == (
        "Invalid value: \"array\": 'operation cancelled: actual cost limit exceeded': "
        "call cost exceeds limit for rule: self.all(n, n > 0)"
    )
    # Eleven rules each within the limit (5 per item), together over the object's budget.
    st, err = await api.post(THINGS, thing("wide", many=[100] * 190_000))
    assert st == 422, err
    assert err["details"]["causes"][-1] == {
        "reason": "FieldValueInvalid",
        "message": 'Invalid value: "array": validation failed due to running out of cost '
        "budget, no further validation rules will be run",
        "field": "spec.many",
    }
    for name in ("long", "wide"):
        assert (await api.get(f"{THINGS}/{name}"))[0] == 404


async def test_admission_policy_expression_over_the_cost_limit(api: Api) -> None:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "costly"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.data) || object.data.all(k, "
                    "object.data[k].matches('^(alpha|beta|gamma|delta|epsilon)*$'))"
                }
            ],
        },
    }
    assert (await api.post(f"{ADM}/validatingadmissionpolicies", policy))[0] == 201
    st, out = await api.post(
        f"{ADM}/validatingadmissionpolicybindings", binding("costly", "costly")
    )
    assert st == 201, out
    cms = "/api/v1/namespaces/default/configmaps"
    st, out = await api.post(cms, {"metadata": {"name": "small"}, "data": {"a": "alpha"}})
    assert st == 201, out
    big = {"metadata": {"name": "big"}, "data": {"a": "alpha" * 500_000}}
    st, err = await api.post(cms, big)
    assert st == 422, err
    assert err["message"].endswith(
        "ValidatingAdmissionPolicy 'costly' with binding 'costly' denied request: expression "
        "'!has(object.data) || object.data.all(k, object.data[k].matches("
        "'^(alpha|beta|gamma|delta|epsilon)*$'))' resulted in error: operation cancelled: "
        "actual cost limit exceeded"
    ), err
    assert (await api.get(f"{cms}/big"))[0] == 404


async def test_library_functions_and_number_comparisons_against_the_budget(api: Api) -> None:
    """isSorted and split cost what kube says over the schema's bounds: just over the
    limit they are refused with kube's factor; rules just under it are accepted, among
    them comparisons of numbers read from the schema, which cost nothing themselves."""

    def strings(max_length: int, rule: str) -> dict[str, Any]:
        return {
            "type": "array",
            "maxItems": 100_000,
            "items": {"type": "string", "maxLength": max_length},
            "x-kubernetes-validations": rules(rule),
        }

    field = f"{ROOT}.properties[spec].properties[%s].x-kubernetes-validations[0].rule"
    # 100,000 x (1 + 1,000 bytes / 10) + 2 = 10,100,002
    sorted_names = strings(250, "self.isSorted()")
    # 100,000 x (3 + 1 + 512 bytes x 2 / 10 (103) + 1 + 1) + 2 = 10,900,002
    parts = strings(128, "self.all(s, s.split(',').size() < 5)")
    for name, prop, factor in (("names", sorted_names, "1.010000x"), ("parts", parts, "1.090000x")):
        st, err = await api.post(CRDS, crd({name: prop}))
        assert st == 422, err
        assert {
            "reason": "FieldValueForbidden",
            "message": f"Forbidden: estimated rule cost exceeds budget by factor of {factor} "
            + ADVICE,
            "field": field % name,
        } in err["details"]["causes"], err
    # 1,572,863 integers (3 MiB of "0,") x (3 + 3 reads + 3 free comparisons) + 2 = 9,437,180
    numbers = {
        "type": "array",
        "items": {"type": "integer"},
        "x-kubernetes-validations": rules("self.all(x, x == 0 || x == 1 || x == 2)"),
    }
    sorted_names["items"]["maxLength"] = 240  # 9,700,002
    parts["items"]["maxLength"] = 112  # 100,000 x (3 + 1 + 90 + 2) + 2 = 9,600,002
    st, out = await api.post(CRDS, crd({"numbers": numbers, "names": sorted_names, "parts": parts}))
    assert st == 201, out


async def test_a_result_of_unknown_size_is_costed_as_kube_costs_it(api: Api) -> None:
    """string(x) has no size kube's estimator knows: a message built by concatenating
    it is refused as a real cluster refuses it (the rule, its share of the total, and
    the total), and the same message through format() is accepted."""
    limits = {
        "type": "object",
        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
        "x-kubernetes-validations": [
            {
                "rule": "self.min <= self.max",
                "messageExpression": "'min (' + string(self.min) + ') is over max'",
            }
        ],
    }
    st, err = await api.post(CRDS, crd({"limits": limits}))
    assert st == 422, err
    where = f"{ROOT}.properties[spec].properties[limits].x-kubernetes-validations[0]"
    assert {(c["field"], c["message"]) for c in err["details"]["causes"]} == {
        (
            f"{where}.messageExpression",
            "Forbidden: estimated messageExpression cost exceeds budget by factor of more "
            f"than 100x {ADVICE}",
        ),
        (
            f"{where}.messageExpression",
            "Forbidden: contributed to estimated rule cost total exceeding cost limit for "
            "entire OpenAPIv3 schema",
        ),
        (
            ROOT,
            "Forbidden: x-kubernetes-validations estimated rule cost total for entire "
            f"OpenAPIv3 schema exceeds budget by factor of more than 100x {ADVICE}",
        ),
    }
    limits["x-kubernetes-validations"][0]["messageExpression"] = (
        "'min (%d) is over max (%d)'.format([self.min, self.max])"
    )
    st, out = await api.post(CRDS, crd({"limits": limits}))
    assert st == 201, out
    st, err = await api.post(THINGS, thing("upside-down", limits={"min": 5, "max": 2}))
    assert st == 422, err
    assert err["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "object": min (5) is over max (2)',
            "field": "spec.limits",
        }
    ]


def test_runtime_cost_counts_what_ran() -> None:
    """celtrace's count of one evaluation: kube's runtime figures for its library tests,
    and only what runs: a decided && or ||, one branch of ?:, and all / exists stopping
    at the item that decides them."""

    def ran(expr: str, **variables: Any) -> int:
        return celtrace.actual_cost(celcost.parse(expr), variables, 10**12)

    kube = [
        ('quantity("200M") == quantity("200M")', 3),
        ('quantity("200M") == quantity("0.2G") && quantity("0.2G") == quantity("200M")', 6),
        ('quantity("50k").add(quantity("20")) == quantity("50.02k")', 5),
        ('quantity("50k").sub(20) == quantity("49980")', 4),
        ('quantity("200M").compareTo(quantity("0.2G")) > 0', 4),
        ("'ABCDEFGHIJ abcdefghij'.lowerAscii() == 'abcdefghij ABCDEFGHIJ'.lowerAscii()", 9),
        ("'abc 123 def 123'.replace('123', '456')", 3),
        ("'abc 123 def 123'.split(' ')", 3),
        ("'abc 123 def 123'.substring(5)", 2),
        ("'  abc 123 def 123  '.trim()", 2),
        ("['aa', 'bb', 'cc', 'd', 'e', 'f', 'g', 'h', 'i', 'j'].join(' ')", 15),
        ("['aa', 'bb', 'cc', 'd', 'e', 'f', 'g', 'h', 'i', 'j'].join()", 13),
        ("'abc 123 def 123'.find('123')", 2),
        ("'abc 123 def 123'.findAll('123')", 2),
        ("[1, 2, 3, 4, 5].sum()", 15),
        ("[false, true, false, true, false].isSorted()", 15),
        (
            "['012345678901', '012345678901', '012345678901', '012345678901', "
            "'012345678901'].isSorted()",
            15,
        ),
        ("'01234567890123456789012345678901234567890123456789'.indexOf('123')", 5),
    ]
    assert [ran(e) for e, _ in kube] == [want for _, want in kube]
    nums = [5, 1, 2, 3]
    # self (1) + 4 iterations of 3 + n (1) + a comparison (1), the result (1)
    assert ran("self.all(n, n > 0)", self=nums) == 1 + 4 * 5 + 1
    # stops after the first item: its condition found false costs 2
    assert ran("self.all(n, n < 3)", self=nums) == 1 + 5 + 2 + 1
    assert ran("self.exists(n, n == 5)", self=nums) == 1 + 6 + 3 + 1
    assert ran("self.exists(n, n == 3)", self=nums) == 1 + 4 * 6 + 1
    # a decided left side: the right one does not run
    long = "x" * 1000
    assert ran("self.size() > 9 || self.matches('^[a-z]+$')", self=long) == 3
    assert ran("self.size() > 9 && self.matches('^[a-z]+$')", self=long) == 3 + 1 + 101 * 2
    assert ran("self.size() < 9 ? self.contains('y') : true", self=long) == 3
    assert ran("self.size() > 9 ? self.contains('y') : true", self=long) == 3 + 1 + 100
    # the same rule over large values, with the count stopped past a cap
    assert (
        celtrace.actual_cost(celcost.parse("self.all(n, n > 0)"), {"self": [1] * 10**6}, 999)
        == 1 + 200 * 5
    )


async def test_rules_within_their_estimates_still_stop_at_the_runtime_budget(api: Api) -> None:
    """A rule on each item whose estimate is accepted (40,101 per item, 80,202,000 for
    the 2,000 items the schema allows) costs 10,101 per item actually run on 1,000
    characters: 900 items pass, 1,000 run past the 10,000,000 budget at the 991st. And
    a rule over a list, 2,020,802 on its values if every item ran, that stops at its
    first item is judged by its result, not refused for a cost it did not run up."""
    pattern = "^(" + "abcdefghij|" * 35 + "abcdefgh|a)*$"  # 400 characters
    assert len(pattern) == 400
    words = {
        "type": "array",
        "maxItems": 2_000,
        "items": {
            "type": "string",
            "maxLength": 1_000,
            "x-kubernetes-validations": rules(f"self.matches('{pattern}')"),
        },
    }
    texts = {
        "type": "array",
        "maxItems": 200,
        "items": {"type": "string", "maxLength": 1_000},
        "x-kubernetes-validations": [
            {"rule": f"self.all(s, s.matches('{pattern}'))", "message": "lower-case words"}
        ],
    }
    st, out = await api.post(CRDS, crd({"words": words, "texts": texts}))
    assert st == 201, out
    st, out = await api.post(THINGS, thing("within", words=["a" * 1_000] * 900))
    assert st == 201, out
    st, err = await api.post(THINGS, thing("beyond", words=["a" * 1_000] * 1_000))
    assert st == 422, err
    (cause,) = err["details"]["causes"]
    assert cause == {
        "reason": "FieldValueInvalid",
        "message": 'Invalid value: "string": validation failed due to running out of cost '
        "budget, no further validation rules will be run",
        "field": "spec.words[990]",
    }
    assert (await api.get(f"{THINGS}/beyond"))[0] == 404
    # all() stops at the first item, which fails
    st, err = await api.post(THINGS, thing("upper", texts=["A" * 1_000] + ["a" * 1_000] * 199))
    assert st == 422, err
    assert err["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "array": lower-case words',
            "field": "spec.texts",
        }
    ]
    st, err = await api.post(THINGS, thing("lower", texts=["a" * 1_000] * 200))
    assert st == 422, err
    assert err["details"]["causes"][0]["message"] == (
        "Invalid value: \"array\": 'operation cancelled: actual cost limit exceeded': "
        f"call cost exceeds limit for rule: self.all(s, s.matches('{pattern}'))"
    )
