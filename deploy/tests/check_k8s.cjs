// Checks rhythm's Kubernetes manifests (deploy/k8s/*/): every document against the Kubernetes
// OpenAPI schema of its apiVersion/kind (kubernetes-models 4.5.1, and
// @kubernetes-models/prometheus-operator 4.4.4 for PodMonitor: the upstream schemas compiled to
// ajv validators), then what a schema cannot see: kustomizations list exactly the files
// beside them, selectors match pod labels, named ports and ConfigMaps exist, GPUs are requested,
// the HPA targets the actor Deployment, the ConfigMap carries deploy/config/rhythm.yaml.
//
// Usage: node check_k8s.cjs NODE_MODULES_DIR REPO_ROOT ARGS_OUT_DIR
//   Writes each container's command + args to ARGS_OUT_DIR/<workload>.json so that the caller
//   (deploy/tests/k8s_test.sh) can have rhythm's own config loader check them.
// Exits 1 with one line per problem.
"use strict";
const fs = require("fs");
const path = require("path");

const [modulesDir, repoRoot, argsOut] = process.argv.slice(2);
if (!modulesDir || !repoRoot || !argsOut) {
  console.error("usage: node check_k8s.cjs NODE_MODULES_DIR REPO_ROOT ARGS_OUT_DIR");
  process.exit(2);
}
const need = (m) => require(path.join(modulesDir, m));
const yaml = need("js-yaml");

const problems = [];
const fail = (where, msg) => problems.push(`${where}: ${msg}`);

// apiVersion/kind -> the kubernetes-models module that validates it.
function modelFor(apiVersion, kind) {
  if (apiVersion === "monitoring.coreos.com/v1") {
    return need(`@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`)[kind];
  }
  const dir = apiVersion.includes("/") ? apiVersion : `v1`;  // core group: "v1"
  return need(`kubernetes-models/${dir}/${kind}`)[kind];
}

const k8sDir = path.join(repoRoot, "deploy", "k8s");
const docs = [];  // {file, doc}
for (const folder of fs.readdirSync(k8sDir).sort()) {
  const dir = path.join(k8sDir, folder);
  if (!fs.statSync(dir).isDirectory()) continue;
  const files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  const kfile = files.find((f) => f === "kustomization.yaml");
  if (!kfile) {
    fail(`deploy/k8s/${folder}`, "no kustomization.yaml");
    continue;
  }
  const k = yaml.load(fs.readFileSync(path.join(dir, kfile), "utf8"));
  const where = `deploy/k8s/${folder}/kustomization.yaml`;
  if (k.apiVersion !== "kustomize.config.k8s.io/v1beta1" || k.kind !== "Kustomization") {
    fail(where, "not a kustomize.config.k8s.io/v1beta1 Kustomization");
  }
  const known = new Set(["apiVersion", "kind", "namespace", "resources", "images", "labels",
                         "commonLabels", "commonAnnotations", "patches", "configMapGenerator"]);
  for (const key of Object.keys(k)) if (!known.has(key)) fail(where, `unknown key '${key}'`);
  const listed = new Set(k.resources || []);
  for (const f of files) {
    if (f !== kfile && !listed.has(f)) fail(where, `${f} is in the folder but not in resources`);
  }
  for (const r of listed) if (!files.includes(r)) fail(where, `resource ${r} does not exist`);
  for (const f of files) {
    if (f === kfile) continue;
    const text = fs.readFileSync(path.join(dir, f), "utf8");
    let n = 0;
    for (const doc of yaml.loadAll(text)) {
      if (doc === null || doc === undefined) continue;
      n++;
      docs.push({ file: `deploy/k8s/${folder}/${f}`, doc, namespace: k.namespace });
    }
    if (n === 0) fail(`deploy/k8s/${folder}/${f}`, "no documents");
  }
}

// 1. Schemas.
for (const { file, doc } of docs) {
  const where = `${file} ${doc.kind}/${doc.metadata && doc.metadata.name}`;
  let Model;
  try {
    Model = modelFor(doc.apiVersion, doc.kind);
  } catch (e) {
    fail(where, `no schema for ${doc.apiVersion} ${doc.kind}`);
    continue;
  }
  if (!Model) {
    fail(where, `no schema for ${doc.apiVersion} ${doc.kind}`);
    continue;
  }
  try {
    new Model(doc).validate();
  } catch (e) {
    fail(where, `schema: ${e.message}`);
  }
  if (!doc.metadata || !doc.metadata.name) fail(where, "metadata.name missing");
}

// 2. What the schema cannot see.
const byKind = (kind) => docs.filter((d) => d.doc.kind === kind).map((d) => d.doc);
const workloads = [...byKind("Deployment"), ...byKind("StatefulSet")];
const configMaps = new Set(byKind("ConfigMap").map((c) => c.metadata.name));
const services = byKind("Service");
const matches = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
const podPorts = (w) =>
  w.spec.template.spec.containers.flatMap((c) => (c.ports || []).map((p) => p));

for (const w of workloads) {
  const where = `${w.kind}/${w.metadata.name}`;
  const tpl = w.spec.template;
  if (!matches(w.spec.selector.matchLabels, tpl.metadata.labels)) {
    fail(where, "spec.selector.matchLabels do not match the pod template's labels");
  }
  const ports = podPorts(w);
  const names = new Set(ports.map((p) => p.name));
  const ann = tpl.metadata.annotations || {};
  if (ann["prometheus.io/scrape"] !== "true") fail(where, "no prometheus.io/scrape annotation");
  if (!ports.some((p) => String(p.containerPort) === ann["prometheus.io/port"])) {
    fail(where, `prometheus.io/port ${ann["prometheus.io/port"]} is not a container port`);
  }
  for (const c of tpl.spec.containers) {
    const r = c.resources || {};
    for (const part of ["requests", "limits"]) {
      if (!r[part] || !(Number(r[part]["nvidia.com/gpu"]) >= 1)) {
        fail(where, `container ${c.name}: no nvidia.com/gpu in resources.${part}`);
      }
    }
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      const p = c[probe];
      if (!p) continue;
      const port = (p.httpGet || p.tcpSocket || {}).port;
      if (typeof port === "string" && !names.has(port)) {
        fail(where, `${probe} uses port '${port}', which no container declares`);
      }
    }
    if (!c.livenessProbe) fail(where, `container ${c.name}: no livenessProbe`);
    const vols = new Set((tpl.spec.volumes || []).map((v) => v.name));
    const claims = new Set(((w.spec.volumeClaimTemplates) || []).map((v) => v.metadata.name));
    for (const m of c.volumeMounts || []) {
      if (!vols.has(m.name) && !claims.has(m.name)) fail(where, `volumeMount ${m.name}: no such volume`);
    }
    fs.mkdirSync(argsOut, { recursive: true });
    fs.writeFileSync(path.join(argsOut, `${w.metadata.name}.json`),
                     JSON.stringify([...(c.command || []), ...(c.args || [])]));
  }
  for (const v of tpl.spec.volumes || []) {
    if (v.configMap && !configMaps.has(v.configMap.name)) {
      fail(where, `volume ${v.name}: ConfigMap ${v.configMap.name} is not in the manifests`);
    }
  }
  if (w.kind === "StatefulSet") {
    const gov = services.find((s) => s.metadata.name === w.spec.serviceName);
    if (!gov) fail(where, `serviceName ${w.spec.serviceName}: no such Service`);
    else if (gov.spec.clusterIP !== "None") fail(where, `${w.spec.serviceName} is not headless`);
    if (!(w.spec.volumeClaimTemplates || []).length) fail(where, "no volumeClaimTemplates");
  }
}
for (const s of services) {
  const where = `Service/${s.metadata.name}`;
  const targets = workloads.filter((w) => matches(s.spec.selector, w.spec.template.metadata.labels));
  if (targets.length === 0) fail(where, "its selector matches no workload");
  for (const p of s.spec.ports) {
    if (typeof p.targetPort === "string" &&
        !targets.every((w) => podPorts(w).some((q) => q.name === p.targetPort))) {
      fail(where, `targetPort '${p.targetPort}' is not a named port of the selected pods`);
    }
  }
}
for (const h of byKind("HorizontalPodAutoscaler")) {
  const where = `HorizontalPodAutoscaler/${h.metadata.name}`;
  const t = h.spec.scaleTargetRef;
  if (!workloads.some((w) => w.kind === t.kind && w.metadata.name === t.name)) {
    fail(where, `scaleTargetRef ${t.kind}/${t.name} is not in the manifests`);
  }
  for (const m of h.spec.metrics || []) {
    if (m.type === "Object" && m.object.describedObject.kind === "Pod") {
      const name = m.object.describedObject.name;
      if (!byKind("StatefulSet").some((s) => `${s.metadata.name}-0` === name)) {
        fail(where, `describedObject Pod ${name} is not pod 0 of a StatefulSet here`);
      }
    }
  }
}
for (const pm of byKind("PodMonitor")) {
  const where = `PodMonitor/${pm.metadata.name}`;
  const targets = workloads.filter((w) => matches(pm.spec.selector.matchLabels, w.spec.template.metadata.labels));
  if (targets.length === 0) fail(where, "its selector matches no workload");
  for (const e of pm.spec.podMetricsEndpoints) {
    if (!targets.every((w) => podPorts(w).some((p) => p.name === e.port))) {
      fail(where, `port '${e.port}' is not a named port of the selected pods`);
    }
  }
  const job = targets.map((w) => w.spec.template.metadata.labels[pm.spec.jobLabel]);
  if (!job.every((j) => j === "rhythm-learner" || j === "rhythm-actor")) {
    fail(where, `jobLabel gives job ${job}, not rhythm-learner / rhythm-actor (alert rules need them)`);
  }
}
const cm = byKind("ConfigMap").find((c) => c.metadata.name === "rhythm-config");
const configFile = fs.readFileSync(path.join(repoRoot, "deploy", "config", "rhythm.yaml"), "utf8");
if (!cm) fail("deploy/k8s/base", "no ConfigMap rhythm-config");
else if (cm.data["rhythm.yaml"] !== configFile) {
  fail("ConfigMap/rhythm-config", "data['rhythm.yaml'] differs from deploy/config/rhythm.yaml");
}

const kinds = docs.map((d) => `${d.doc.kind}/${d.doc.metadata.name}`).join(", ");
if (problems.length) {
  for (const p of problems) console.log(`check_k8s: ${p}`);
  process.exit(1);
}
console.log(`check_k8s: ${docs.length} documents valid (${kinds})`);
