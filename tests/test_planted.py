"""The planted-attack suite with the real model and the default rules (issue: targeted selection).

Unchanged Alpaca records come from the precomputed real embeddings; the few records an
attack edits are embedded by the real all-MiniLM-L6-v2 model.
"""

import pytest

from auditor.planted import SCENARIOS, records_from_alpaca, run_scenario
from auditor.rules import load_rules
from tests.helpers import alpaca_records, fixture_cache

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from auditor.encoders import load_encoder

    cache = fixture_cache(tmp_path_factory.mktemp("cache"))
    return records_from_alpaca(alpaca_records()), load_encoder(device="cpu"), cache, load_rules()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(setup, name):
    pool, encoder, cache, rules = setup
    result = run_scenario(SCENARIOS[name](pool, 0), encoder, cache, rules, seed=0)
    loc = result.localisation
    if result.scenario.is_attack:
        assert result.status == "fail", [f.summary for f in result.findings if f.severity != "info"]
        assert loc.precision >= 0.5 and loc.recall >= 0.5, (loc, result.scenario.description)
    else:
        assert result.status != "fail", [f.summary for f in result.findings if f.severity == "fail"]
