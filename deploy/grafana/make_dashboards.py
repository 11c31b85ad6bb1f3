#!/usr/bin/python3
"""Writes rhythm's Grafana dashboards (deploy/grafana/dashboards/*.json) from the panel lists below.

The JSON files are committed (Grafana provisioning and users import them as they are); edit this
file and run it to change them:  deploy/grafana/make_dashboards.py
`--check` exits 1 when a committed file differs from what this script writes (CTest:
deploy_dashboards_test), so the two never drift apart.

Every dashboard has a `datasource` variable (any Prometheus), so it works with the provisioned
datasource under compose and with an existing Grafana elsewhere. Panels key actors on the
`instance` label, which every scrape configuration sets.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "dashboards")
DS = {"type": "prometheus", "uid": "${datasource}"}


def q(p, sel="le"):
    """histogram_quantile of a rhythm histogram over the panel's rate interval."""
    return (f"histogram_quantile({p}, sum by ({sel}) "
            f"(rate({{metric}}_bucket[$__rate_interval])))")


def hist(metric, p, by=""):
    sel = f"{by}, le" if by else "le"
    return q(p, sel).format(metric=metric)


def ts(title, targets, unit="short", desc="", stack=False, w=12, h=8, minv=None, maxv=None):
    """A time-series panel; targets are (expr, legend) pairs."""
    defaults = {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10,
                                         "stacking": {"mode": "normal" if stack else "none"}}}
    if minv is not None:
        defaults["min"] = minv
    if maxv is not None:
        defaults["max"] = maxv
    return {"type": "timeseries", "title": title, "description": desc, "datasource": DS,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": [{"datasource": DS, "expr": e, "legendFormat": l, "refId": chr(65 + i)}
                        for i, (e, l) in enumerate(targets)],
            "_w": w, "_h": h}


def stat(title, expr, unit="short", desc="", decimals=None, w=4):
    defaults = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": desc, "datasource": DS,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "auto"},
            "targets": [{"datasource": DS, "expr": expr, "legendFormat": "", "refId": "A"}],
            "_w": w, "_h": 4}


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_w": 24, "_h": 1}


def dashboard(uid, title, desc, panels, extra_vars=()):
    x = y = 0
    row_h = 0
    laid = []
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_w"), p.pop("_h")
        if x + w > 24:
            x, y = 0, y + row_h
            row_h = 0
        p["id"] = i
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x += w
        row_h = max(row_h, h)
        laid.append(p)
    variables = [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                  "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
                  "options": [], "regex": ""}]
    variables.extend(extra_vars)
    return {"uid": uid, "title": title, "description": desc, "tags": ["rhythm"],
            "editable": True, "graphTooltip": 1, "schemaVersion": 38, "version": 1,
            "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "timezone": "",
            "templating": {"list": variables}, "annotations": {"list": []},
            "links": [{"type": "dashboards", "tags": ["rhythm"], "asDropdown": True,
                       "title": "rhythm", "includeVars": True, "keepTime": True}],
            "panels": laid}


def loop():
    return dashboard("rhythm-loop", "rhythm: loop at a glance",
                     "Learner and actors together: is the loop training, how fast, how fresh.", [
        row("Now"),
        stat("Policy version", "max(rhythm_learner_policy_version)", decimals=0),
        stat("Actors connected", "max(rhythm_learner_actors_connected)", decimals=0),
        stat("Steps / min", "sum(rate(rhythm_learner_steps_total[$__rate_interval])) * 60",
             decimals=2),
        stat("Reward (last batch)", "max(rhythm_learner_reward_mean)", decimals=3),
        stat("Accuracy (last batch)", "max(rhythm_learner_accuracy_ratio)", unit="percentunit"),
        stat("Queue depth", "max(rhythm_learner_queue_depth_rollouts)", decimals=0,
             desc="Rollouts queued at the learner; credits stop at learner.queue_capacity."),
        row("Learning"),
        ts("Reward and accuracy", [("rhythm_learner_reward_mean", "reward (learner batch)"),
                                   ("rhythm_learner_accuracy_ratio", "accuracy (learner batch)"),
                                   ("avg(rhythm_actor_reward_mean)", "reward (actors, mean)")]),
        ts("Loss", [("rhythm_learner_loss", "loss")]),
        row("Throughput and timing"),
        ts("Tokens per second", [("sum(rhythm_learner_tokens_per_second)", "learner (trained)"),
                                 ("sum(rhythm_actor_tokens_per_second)", "actors (generated)")]),
        ts("Step time", [(hist("rhythm_learner_step_seconds", 0.5), "p50"),
                         (hist("rhythm_learner_step_seconds", 0.9), "p90"),
                         ("sum(rate(rhythm_learner_steps_total[$__rate_interval])) * 60",
                          "steps / min")], unit="s"),
        ts("Rollouts: sent vs acked", [
            ("sum(rate(rhythm_actor_rollouts_sent_total[$__rate_interval]))", "sent (actors)"),
            ("sum(rate(rhythm_actor_rollouts_acked_total[$__rate_interval]))", "acked (actors)"),
            ("sum(rate(rhythm_learner_rollouts_accepted_total[$__rate_interval]))",
             "accepted (learner)"),
            ("sum(rate(rhythm_learner_rollouts_duplicate_total[$__rate_interval]))",
             "duplicates (learner)"),
            ("sum by (reason) (rate(rhythm_learner_rollouts_rejected_total[$__rate_interval]))",
             "rejected: {{reason}}")], unit="ops"),
        ts("Queue depth and leases", [
            ("rhythm_learner_queue_depth_rollouts", "queued rollouts"),
            ("rhythm_learner_leases_outstanding", "outstanding leases"),
            ("sum(rhythm_actor_unacked_rollouts)", "unacked at actors")]),
        row("Freshness"),
        ts("Staleness (policy versions)", [
            (hist("rhythm_learner_staleness_versions", 0.5), "p50"),
            (hist("rhythm_learner_staleness_versions", 0.9), "p90"),
            ("max(rhythm_actor_version_lag)", "max actor lag")],
           desc="Policy-version lag of trained groups; groups beyond trainer.max_staleness "
                "are dropped."),
        ts("Groups dropped", [
            ("sum by (reason) (rate(rhythm_learner_groups_dropped_total[$__rate_interval]))",
             "{{reason}}")], unit="ops", stack=True),
        ts("Weight sync throughput (GB/s)", [
            ("rhythm_learner_weight_sync_gbps", "learner {{transport}}"),
            ("avg by (transport) (rhythm_actor_weight_sync_gbps)", "actors {{transport}} (mean)"),
            ("sum(rate(rhythm_learner_weight_publish_bytes_total[$__rate_interval])) / 1e9",
             "published (GB/s, averaged)")],
           desc="Last weight sync per transport (gRPC chunks, NCCL/Gloo broadcast)."),
        ts("Weight sync and generation pause", [
            (hist("rhythm_learner_weight_sync_seconds", 0.9, "transport"),
             "learner sync p90 {{transport}}"),
            (hist("rhythm_learner_weight_publish_seconds", 0.9), "learner publish p90"),
            (hist("rhythm_actor_generation_pause_seconds", 0.9), "actor generation pause p90")],
           unit="s"),
        ts("Weight transport group", [
            ("rhythm_learner_weight_group_size", "group size"),
            ("increase(rhythm_learner_weight_group_reforms_total[$__rate_interval])", "re-forms"),
            ("increase(rhythm_learner_weight_fallbacks_total[$__rate_interval])",
             "fallbacks to gRPC")]),
        ts("Checkpoint time and rollout log", [
            (hist("rhythm_learner_checkpoint_seconds", 0.9), "checkpoint p90 (s)"),
            ("rhythm_learner_rollout_log_bytes / 1e9", "rollout log (GB)")]),
    ])


def actors():
    sel = 'instance=~"$instance"'
    inst = {"name": "instance", "label": "Actor", "type": "query", "datasource": DS,
            "query": {"query": "label_values(rhythm_actor_policy_version, instance)",
                      "refId": "instance"},
            "definition": "label_values(rhythm_actor_policy_version, instance)",
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
            "current": {}, "hide": 0, "options": [], "regex": ""}

    def m(name):
        return f"{name}{{{sel}}}"

    def h(name, p):
        return (f"histogram_quantile({p}, sum by (instance, le) "
                f"(rate({name}_bucket{{{sel}}}[$__rate_interval])))")

    return dashboard("rhythm-actors", "rhythm: per-actor health",
                     "One line per actor (the instance label).", [
        row("Liveness"),
        stat("Actors reporting", f"count({m('rhythm_actor_policy_version')})", decimals=0, w=6),
        stat("Actors connected (learner)", "max(rhythm_learner_actors_connected)", decimals=0,
             w=6),
        stat("Rollouts sent / min (all)",
             f"sum(rate({m('rhythm_actor_rollouts_sent_total')}[$__rate_interval])) * 60",
             decimals=1, w=6),
        stat("Max version lag", f"max({m('rhythm_actor_version_lag')})", decimals=0, w=6),
        ts("Generated tokens per second", [(m("rhythm_actor_tokens_per_second"),
                                            "{{instance}}")]),
        ts("Rollouts sent / acked per minute", [
            (f"rate({m('rhythm_actor_rollouts_sent_total')}[$__rate_interval]) * 60",
             "sent {{instance}}"),
            (f"rate({m('rhythm_actor_rollouts_acked_total')}[$__rate_interval]) * 60",
             "acked {{instance}}"),
            (f"rate({m('rhythm_actor_rollouts_rejected_total')}[$__rate_interval]) * 60",
             "rejected {{instance}}")]),
        ts("Unacked rollouts, and resent per minute", [
            (m("rhythm_actor_unacked_rollouts"), "unacked {{instance}}"),
            (f"rate({m('rhythm_actor_rollouts_resent_total')}[$__rate_interval]) * 60",
             "resent {{instance}}")]),
        ts("Reconnects per minute", [
            (f"rate({m('rhythm_actor_reconnects_total')}[$__rate_interval]) * 60",
             "{{instance}}")]),
        ts("Policy version and lag", [
            (m("rhythm_actor_policy_version"), "version {{instance}}"),
            (m("rhythm_actor_version_lag"), "lag {{instance}}")]),
        ts("Reward (mean of the last batch)", [(m("rhythm_actor_reward_mean"), "{{instance}}")]),
        row("Timing"),
        ts("Generation time per batch (p90)", [
            (h("rhythm_actor_generation_seconds", 0.9), "{{instance}}")], unit="s"),
        ts("Verification time (p90)", [
            (h("rhythm_actor_verification_seconds", 0.9), "{{instance}}")], unit="s"),
        ts("Generation pause per weight swap (p90)", [
            (h("rhythm_actor_generation_pause_seconds", 0.9), "pause {{instance}}")], unit="s"),
        ts("Weight sync (GB/s)", [
            (m("rhythm_actor_weight_sync_gbps"), "{{instance}} {{transport}}"),
            (f"sum by (instance, transport) "
             f"(rate({m('rhythm_actor_weight_sync_bytes_total')}[$__rate_interval])) / 1e9",
             "{{instance}} {{transport}} (averaged)")]),
        ts("Weight sync time (p90) and fallbacks", [
            (f"histogram_quantile(0.9, sum by (instance, transport, le) "
             f"(rate(rhythm_actor_weight_sync_seconds_bucket{{{sel}}}[$__rate_interval])))",
             "sync p90 {{instance}} {{transport}}"),
            (f"increase({m('rhythm_actor_weight_fallbacks_total')}[$__rate_interval])",
             "fallbacks {{instance}}")]),
        ts("Response length (p50, tokens)", [
            (h("rhythm_actor_response_length_tokens", 0.5), "{{instance}}")]),
    ], extra_vars=[inst])


def credit():
    return dashboard("rhythm-credit", "rhythm: credit assignment",
                     "Where the learner's token-level credit lands, and how far each step moves "
                     "the policy.", [
        row("Credit"),
        ts("Credit on preplan and anchor tokens", [
            ("rhythm_learner_preplan_credit_fraction_ratio", "preplan (WAAD) tokens"),
            ("rhythm_learner_anchor_credit_fraction_ratio", "anchor (FAI) tokens")],
           unit="percentunit", minv=0, maxv=1,
           desc="Fraction of the batch's absolute shaped advantage on the tokens the strategy "
                "marks (credit.strategy)."),
        ts("Reward and accuracy", [("rhythm_learner_reward_mean", "reward"),
                                   ("rhythm_learner_accuracy_ratio", "accuracy")]),
        row("Policy update"),
        ts("Clip fraction", [("rhythm_learner_clip_fraction_ratio", "clipped tokens")],
           unit="percentunit", minv=0),
        ts("Approximate KL to the behaviour policy", [("rhythm_learner_approx_kl", "KL")]),
        ts("Entropy (nats per token)", [("rhythm_learner_entropy_nats", "entropy")]),
        ts("Loss", [("rhythm_learner_loss", "loss")]),
        ts("Staleness of trained groups", [
            (hist("rhythm_learner_staleness_versions", 0.5), "p50"),
            (hist("rhythm_learner_staleness_versions", 0.9), "p90")]),
        ts("Groups dropped by reason", [
            ("sum by (reason) (rate(rhythm_learner_groups_dropped_total[$__rate_interval]))",
             "{{reason}}")], unit="ops", stack=True),
        row("Summary agreement: actor vs learner (credit.summary_agreement)"),
        *[ts(f"Mean agreement by staleness: {label}", [
            (f'sum by (staleness) (rate(rhythm_learner_summary_agreement_sum'
             f'{{measure="{measure}"}}[$__rate_interval])) / sum by (staleness) '
             f'(rate(rhythm_learner_summary_agreement_count{{measure="{measure}"}}'
             f'[$__rate_interval]))', "staleness {{staleness}}")],
             maxv=1, w=8, desc=desc)
          for measure, label, desc in [
              ("waad_spearman", "WAAD Spearman",
               "Rank correlation of the actor's WAAD (behaviour policy, sent as fp16) with the "
               "learner's (pi_old), per rollout, averaged over the interval; by the rollout's "
               "staleness in policy versions. 1 = same ordering of tokens."),
              ("fai_spearman", "FAI Spearman",
               "As WAAD, over the tokens where both sources define FAI."),
              ("selection_jaccard", "selection Jaccard",
               "Overlap of the token sets the credit strategy amplifies from each source's "
               "summary (1 by construction for none / random / entropy).")]],
        ts("fp16 error ratio of the actor's summaries (last step per staleness)", [
            ('max by (signal, staleness) (rhythm_learner_summary_fp16_error_ratio)',
             "{{signal}}, staleness {{staleness}}")], minv=0,
           desc="Largest per-token |actor - learner| / (2^-11 |learner| + 1e-5): <= 1 means the "
                "two differ by no more than the wire's fp16 rounding, as they should at "
                "staleness 0; above, the policy moved between the two."),
        row("Algorithm switches (trainer.*: porting a recipe)"),
        ts("KL to the reference policy", [("rhythm_learner_ref_kl", "mean per token")],
           desc="trainer.kl_coef > 0: the estimator (trainer.kl_estimator) against the frozen "
                "reference (the starting weights, or trainer.reference_path)."),
        ts("Importance weights pi_old / pi_behaviour", [
            ("rhythm_learner_tis_weight_mean", "mean weight"),
            ("rhythm_learner_tis_capped_fraction_ratio", "capped at trainer.tis_cap")],
           desc="1 at staleness 0 (top-k / top-p are replayed on the learner); below 1 as "
                "actors fall behind."),
        ts("Masked out of the loss", [
            ("sum by (reason) (rate(rhythm_learner_masked_tokens_total[$__rate_interval]))",
             "tokens: {{reason}}"),
            ("sum by (reason) (rate(rhythm_learner_masked_responses_total[$__rate_interval]))",
             "responses: {{reason}}")], unit="ops",
           desc="trainer.token_mask_* (IcePop), sequence_mask_*, mask_truncated, and sampled "
                "tokens pi_old's own top-k/top-p filter drops."),
        ts("Overlong shaping", [
            ("rate(rhythm_learner_overlong_penalized_responses_total[$__rate_interval])",
             "penalised responses / s"),
            ("rhythm_learner_overlong_penalty_mean", "mean penalty (last batch)")],
           desc="trainer.overlong_buffer: DAPO's soft punishment of responses near "
                "generation.max_new_tokens."),
        ts("Dynamic sampling", [
            ("rhythm_learner_groups_filtered_ratio", "filtered share (last batch)"),
            ("rhythm_learner_batch_groups", "groups in the last batch"),
            ("increase(rhythm_learner_short_batches_total[$__rate_interval])", "short batches"),
            (hist("rhythm_learner_sampling_extra_rounds", 0.9), "extra rounds p90")],
           desc="Zero-variance groups dropped while a batch fills; trainer.dynamic_sampling "
                "bounds the extra rounds, then trains a short batch."),
        ts("The learner's own evaluation (learner.eval_every)", [
            ("rhythm_learner_eval_pass1_ratio", "greedy pass@1"),
            ("rhythm_learner_eval_avg_at_k_ratio", "avg@k"),
            ("rhythm_learner_eval_pass_at_k_ratio", "pass@k")], unit="percentunit", minv=0,
           maxv=1, desc="On the first learner.eval_n problems of learner.eval_dataset (or the "
                        "held-out split), at version rhythm_learner_eval_version."),
    ])


DASHBOARDS = {"rhythm-loop.json": loop, "rhythm-actors.json": actors,
              "rhythm-credit.json": credit}


def render(make):
    return json.dumps(make(), indent=2, sort_keys=True) + "\n"


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, make in DASHBOARDS.items():
        path = os.path.join(OUT_DIR, name)
        text = render(make)
        if check:
            try:
                with open(path) as f:
                    if f.read() != text:
                        stale.append(path)
            except FileNotFoundError:
                stale.append(path)
        else:
            os.makedirs(OUT_DIR, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            print(f"make_dashboards: wrote {path}")
    if stale:
        print("make_dashboards: out of date (run deploy/grafana/make_dashboards.py): "
              + " ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
