"""Every status, action and event the workflows know has the console's words for it, in
both languages: a new one added to a workflow without them fails here, not on a page
that shows a code to a window clerk."""

from __future__ import annotations

from services.console import i18n
from shared.domain.messages import PAYLOADS
from shared.domain.workflow.definitions import load_workflows
from shared.domain.workflow.payloads import BODIES


def test_every_status_action_and_event_has_words() -> None:
    statuses: set[str] = set()
    actions, events = set(BODIES), set(PAYLOADS)
    for workflow in load_workflows():
        steps = list(workflow.transitions) + ([workflow.start] if workflow.start else [])
        for step in steps:
            actions.add(step.action)
            events.add(step.event)
            statuses.update(getattr(step, "from_", ()))
            if step.to:
                statuses.add(step.to)
    for table, wanted in (("status", statuses), ("action", actions), ("event", events)):
        missing = sorted(wanted - set(i18n.TABLES[table]))
        assert missing == [], f"{table}: no words for {missing}"
        for key in wanted:
            zh, en = i18n.TABLES[table][key]
            assert zh and en and zh != en, (table, key)


def test_a_missing_word_shows_its_key_and_english_is_chosen_by_name() -> None:
    assert i18n.word("status", "accepted", "zh") == "已受理"
    assert i18n.word("status", "accepted", "en") == "accepted"
    assert i18n.word("status", "some_new_status", "zh") == "some_new_status"
    assert (
        i18n.language("en") == "en" and i18n.language("fr") == "zh" and i18n.language(None) == "zh"
    )
