"""TradingRuleActor: the trading rule's memory (reference price, last
trigger, the decisions it has made) as one virtual actor, so it survives a
restart of the trading service and is shared, one call at a time, by every
replica: two replicas that see the same move do not both trade it.

A price message asks `Observe`; a move the rule acts on becomes a pending
decision (its id from the message id) until `Decided` confirms it was
recorded. A message redelivered after a crash finds its pending decision and
completes it; one already decided is not traded again. The trading service
hosts the actor.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dapr.actor import Actor, ActorInterface, actormethod

from clients.metrics import ACTOR_ACTIVATIONS, ACTOR_DEACTIVATIONS, ACTORS_ACTIVE
from intraday.config import get_settings
from intraday.trading.rules import PriceMoveRule

ACTOR_TYPE = "TradingRuleActor"
STATE_KEY = "rule"
KEEP_DECIDED = 1000  # decision ids remembered (redeliveries arrive within minutes)


class TradingRuleActorInterface(ActorInterface):
    @actormethod(name="Observe")
    async def observe(self, tick: dict) -> dict:
        """{decision_id, price_eur_mwh, at}: {trade, reference_price, state}."""
        raise NotImplementedError  # the actor implements it; callers reach it by proxy

    @actormethod(name="Decided")
    async def decided(self, request: dict) -> dict:
        """{decision_id}: the decision is recorded; forget it as pending."""
        raise NotImplementedError  # the actor implements it; callers reach it by proxy

    @actormethod(name="GetState")
    async def get_state(self) -> dict:
        """The rule's reference price, last trigger, pending and decided ids."""
        raise NotImplementedError  # the actor implements it; callers reach it by proxy


class TradingRuleActor(Actor, TradingRuleActorInterface):
    _memory: dict  # set at activation: the rule, pending and decided decision ids

    async def _on_activate(self) -> None:
        ACTOR_ACTIVATIONS.labels(ACTOR_TYPE).inc()
        ACTORS_ACTIVE.labels(ACTOR_TYPE).inc()
        found, memory = await self._state_manager.try_get_state(STATE_KEY)
        self._memory = memory if found and memory is not None else {"rule": {}, "pending": {}, "decided": []}

    async def _on_deactivate(self) -> None:
        ACTOR_DEACTIVATIONS.labels(ACTOR_TYPE).inc()
        ACTORS_ACTIVE.labels(ACTOR_TYPE).dec()

    def _rule(self) -> PriceMoveRule:
        settings = get_settings()
        rule = PriceMoveRule(settings.price_move_threshold_eur_mwh,
                             timedelta(seconds=settings.price_debounce_seconds))
        rule.restore(self._memory["rule"])
        return rule

    async def _save(self) -> None:
        await self._state_manager.set_state(STATE_KEY, self._memory)
        await self._state_manager.save_state()

    async def observe(self, tick: dict) -> dict:
        memory = self._memory
        decision_id = tick["decision_id"]
        if decision_id in memory["pending"]:  # redelivered before its decision was recorded
            return {"trade": True, **memory["pending"][decision_id], "state": "pending"}
        if decision_id in memory["decided"]:
            return {"trade": False, "state": "decided"}
        rule = self._rule()
        reference = rule.reference_price
        if not rule.observe(float(tick["price_eur_mwh"]), datetime.fromisoformat(tick["at"])):
            return {"trade": False, "reference_price": reference, "state": "no_move"}
        memory["rule"] = rule.state()
        memory["pending"][decision_id] = {"reference_price": reference}
        await self._save()
        return {"trade": True, "reference_price": reference, "state": "new"}

    async def decided(self, request: dict) -> dict:
        memory = self._memory
        decision_id = request["decision_id"]
        memory["pending"].pop(decision_id, None)
        if decision_id not in memory["decided"]:
            memory["decided"] = [*memory["decided"], decision_id][-KEEP_DECIDED:]
        await self._save()
        return {"decided": len(memory["decided"]), "pending": len(memory["pending"])}

    async def get_state(self) -> dict:
        return {**self._memory["rule"], "pending": sorted(self._memory["pending"]),
                "decided": self._memory["decided"][-20:]}
