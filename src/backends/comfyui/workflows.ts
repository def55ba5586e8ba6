/**
 * User workflows: an API-format graph from a JSON file (or inline), plus a declared mapping from
 * request fields onto node inputs. The graph is data only: easel checks its shape, writes the mapped
 * values into a copy, and hands it to ComfyUI. Nothing in it is evaluated.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { WorkflowConfig, WorkflowField } from './options.ts';
import type { DeclaredOption } from '../declared-options.ts';
import type { ApiGraph } from './templates.ts';

export interface NodeInputRef {
  node: string;
  input: string;
}

export interface LoadedWorkflow {
  name: string;
  graph: ApiGraph;
  inputs: Partial<Record<WorkflowField, NodeInputRef[]>>;
  set: Array<{ ref: NodeInputRef; value: string | number | boolean }>;
  /** Declared provider options: where each is written and its type. */
  options: Record<string, { refs: NodeInputRef[]; type: Exclude<DeclaredOption, string> }>;
  outputs: string[] | undefined;
  /** LoRA slots, filled in order by a request's `loras`. */
  loraSlots: Array<{ name: NodeInputRef; weight: NodeInputRef[] }>;
  /** Affinity key. */
  checkpoint: string;
  defaults: NonNullable<WorkflowConfig['defaults']>;
}

export function parseRef(target: string): NodeInputRef {
  const cut = target.lastIndexOf('.');
  return { node: target.slice(0, cut), input: target.slice(cut + 1) };
}

/** Reads and checks one workflow; errors name the workflow and what is wrong. */
export function loadWorkflow(cfg: WorkflowConfig, backendName: string): LoadedWorkflow {
  const where = `backend "${backendName}", workflow "${cfg.name}"`;
  let raw: unknown = cfg.graph;
  if (cfg.file) {
    const path = resolve(cfg.file);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new Error(`${where}: cannot read ${path}: ${(err as Error).message}`);
    }
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new Error(`${where}: ${path} is not JSON: ${(err as Error).message}`);
    }
  }
  const graph = checkGraph(raw, where);

  const inputs: LoadedWorkflow['inputs'] = {};
  for (const [field, spec] of Object.entries(cfg.inputs ?? {})) {
    if (spec === undefined) continue;
    const refs = (Array.isArray(spec) ? spec : [spec]).map(parseRef);
    for (const ref of refs) checkRef(graph, ref, `${where}: inputs.${field}`);
    inputs[field as WorkflowField] = refs;
  }
  const set = Object.entries(cfg.set ?? {}).map(([target, value]) => {
    const ref = parseRef(target);
    checkRef(graph, ref, `${where}: set.${target}`);
    return { ref, value };
  });
  const options: LoadedWorkflow['options'] = {};
  for (const [name, { to, ...type }] of Object.entries(cfg.options ?? {})) {
    const refs = (Array.isArray(to) ? to : [to]).map(parseRef);
    for (const ref of refs) checkRef(graph, ref, `${where}: options.${name}`);
    options[name] = { refs, type };
  }
  const loraSlots = (cfg.loras ?? []).map((slot, i) => {
    const name = parseRef(slot.name);
    checkRef(graph, name, `${where}: loras[${i}].name`);
    const weight = (Array.isArray(slot.weight) ? slot.weight : [slot.weight]).map(parseRef);
    for (const ref of weight) checkRef(graph, ref, `${where}: loras[${i}].weight`);
    return { name, weight };
  });
  for (const id of cfg.outputs ?? []) {
    if (!graph[id]) throw new Error(`${where}: outputs names node "${id}", which the graph does not have`);
  }
  const loader = Object.values(graph).find((n) => n.class_type === 'CheckpointLoaderSimple' && typeof n.inputs.ckpt_name === 'string');
  return {
    name: cfg.name,
    graph,
    inputs,
    set,
    options,
    outputs: cfg.outputs,
    loraSlots,
    checkpoint: cfg.checkpoint ?? (loader?.inputs.ckpt_name as string | undefined) ?? `workflow:${cfg.name}`,
    defaults: cfg.defaults ?? {},
  };
}

function checkGraph(raw: unknown, where: string): ApiGraph {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${where}: the workflow must be a JSON object of nodes`);
  const obj = raw as Record<string, unknown>;
  if (Array.isArray(obj.nodes) && Array.isArray(obj.links)) {
    throw new Error(`${where}: this is a UI workflow; export it from ComfyUI with "Save (API)" (API format)`);
  }
  const ids = Object.keys(obj);
  if (ids.length === 0) throw new Error(`${where}: the workflow has no nodes`);
  for (const id of ids) {
    const node = obj[id] as { class_type?: unknown; inputs?: unknown } | null;
    if (!node || typeof node !== 'object' || typeof node.class_type !== 'string' || !node.inputs || typeof node.inputs !== 'object') {
      throw new Error(`${where}: node "${id}" is not an API-format node ({class_type, inputs})`);
    }
  }
  return obj as ApiGraph;
}

function checkRef(graph: ApiGraph, ref: NodeInputRef, where: string): void {
  const node = graph[ref.node];
  if (!node) throw new Error(`${where}: the graph has no node "${ref.node}"`);
  if (!(ref.input in node.inputs)) {
    throw new Error(`${where}: node "${ref.node}" (${node.class_type}) has no input "${ref.input}" (it has ${Object.keys(node.inputs).join(', ') || 'none'})`);
  }
}

/**
 * A copy of the graph with the request's LoRAs in its slots (the rest weighted 0), the fixed values,
 * then the declared options, then the request's mapped field values written in (so a field easel maps always wins over an option aimed at the same input).
 */
export function applyWorkflow(
  wf: LoadedWorkflow,
  values: Partial<Record<WorkflowField, unknown>>,
  options: Record<string, unknown> = {},
  loras: ReadonlyArray<{ ref: string; weight: number }> = [],
): ApiGraph {
  const graph = structuredClone(wf.graph);
  wf.loraSlots.forEach((slot, i) => {
    const lora = loras[i];
    if (lora) graph[slot.name.node]!.inputs[slot.name.input] = lora.ref;
    for (const ref of slot.weight) graph[ref.node]!.inputs[ref.input] = lora?.weight ?? 0;
  });
  for (const { ref, value } of wf.set) graph[ref.node]!.inputs[ref.input] = value;
  for (const [name, value] of Object.entries(options)) {
    if (value === undefined) continue;
    for (const ref of wf.options[name]?.refs ?? []) graph[ref.node]!.inputs[ref.input] = value;
  }
  for (const [field, value] of Object.entries(values)) {
    if (value === undefined) continue;
    for (const ref of wf.inputs[field as WorkflowField] ?? []) graph[ref.node]!.inputs[ref.input] = value;
  }
  return graph;
}
