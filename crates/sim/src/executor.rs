//! The worker: takes prompts off the queue one at a time and executes them
//! with stock's messages, in stock's order (docs/comfyui-api.md §5.4):
//!
//! ```text
//! execution_start, execution_cached{nodes}
//! per node that runs:   progress_state(running) executing [steps] [executed] progress_state(finished)
//!   where each step is: progress_state, BIN4 preview (if asked for), progress, BIN1 preview (if not)
//! per cached output:    executed(cached UI) progress_state(finished)
//! execution_success | execution_error | execution_interrupted
//! (history written, status broadcast) executing{node: null}
//! ```
//!
//! Messages go to the prompt's `client_id` socket only; with no client id,
//! the ones stock broadcasts (`progress_state`, `progress`, previews,
//! `execution_interrupted`) go to everyone and the rest nowhere. Interrupts
//! are seen where stock sees them: before a node runs and at each step.
//! Per-step messages and the interrupt flag live in `run`; which nodes run
//! in which order, and what is cached, in `graph`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::SimState;
use super::graph::{self, ExecutionList, as_link};
use super::nodes::{self, Call, Data, Failure, Input, NodeError};
use super::queue::QueueItem;
use super::run::{NodeHost, Run};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A cached node result: its outputs and its UI (`{"meta", "output"}`).
struct CacheEntry {
    values: Vec<Data>,
    ui: Option<Value>,
}

/// The worker's memory between prompts.
struct Worker {
    state: Arc<SimState>,
    /// Results by cache signature (see `graph`).
    cache: HashMap<String, Arc<CacheEntry>>,
    /// PreviewImage's suffix per (node id, class), like stock's node objects.
    suffixes: HashMap<(String, String), String>,
}

/// Runs prompts until the server closes.
pub(crate) async fn run(state: Arc<SimState>) {
    let mut worker = Worker {
        state: state.clone(),
        cache: HashMap::new(),
        suffixes: HashMap::new(),
    };
    let mut closing = state.closing.subscribe();
    loop {
        let item = tokio::select! {
            biased;
            () = super::until_closing(&mut closing) => return,
            item = state.queue.get() => item,
        };
        if state.free_memory.swap(false, Ordering::Relaxed) {
            worker.cache.clear();
        }
        worker.execute(item).await;
    }
}

/// Why a prompt stopped early.
enum Stop {
    Interrupted { node: String },
    Error(Box<Failed>),
}

/// A node that raised, with what it was given.
struct Failed {
    node: String,
    error: NodeError,
    inputs: Map<String, Value>,
}

impl Stop {
    fn error(node: &str, error: NodeError, inputs: Map<String, Value>) -> Stop {
        Stop::Error(Box::new(Failed {
            node: node.to_owned(),
            error,
            inputs,
        }))
    }
}

/// What a prompt produced for the UI, in order: (node, `{"meta", "output"}`).
type UiOutputs = Vec<(String, Value)>;

impl Worker {
    async fn execute(&mut self, item: QueueItem) {
        let state = self.state.clone();
        state.interrupt.clear();
        if *state.closing.borrow() {
            // Shutting down: stop this prompt at its first node.
            state.interrupt.raise();
        }
        let run = Arc::new(Run::new(state.clone(), &item));
        state.hub.set_current(run.sid());
        let mut messages = Vec::new();
        let mut add = |kind: &str, data: Value, broadcast: bool| {
            let mut data = data;
            if let Some(map) = data.as_object_mut() {
                map.insert("timestamp".into(), json!(now_ms()));
            }
            if run.client_id.is_some() || broadcast {
                state.hub.send(run.sid(), kind, data.clone());
            }
            messages.push(json!([kind, data]));
        };
        add(
            "execution_start",
            json!({"prompt_id": run.prompt_id}),
            false,
        );

        let empty = Map::new();
        let prompt = item.prompt.as_object().unwrap_or(&empty);
        let signatures = self.prepare(prompt).await;
        let cached: Vec<&String> = prompt
            .keys()
            .filter(|id| {
                signatures
                    .get(*id)
                    .is_some_and(|s| self.cache.contains_key(s))
            })
            .collect();
        add(
            "execution_cached",
            json!({"nodes": cached, "prompt_id": run.prompt_id}),
            false,
        );

        let mut executed = Vec::new();
        let mut ui = UiOutputs::new();
        let outcome = self
            .run_nodes(
                &run,
                prompt,
                &item.outputs,
                &signatures,
                &mut executed,
                &mut ui,
            )
            .await;
        match outcome {
            Ok(()) => add(
                "execution_success",
                json!({"prompt_id": run.prompt_id}),
                false,
            ),
            Err(Stop::Interrupted { node }) => {
                let data = json!({
                    "prompt_id": run.prompt_id, "node_id": node,
                    "node_type": prompt.get(&node).map_or("", graph::class_type), "executed": executed,
                });
                add("execution_interrupted", data, true);
            }
            Err(Stop::Error(failed)) => {
                let Failed {
                    node,
                    error,
                    inputs,
                } = *failed;
                let node_type = prompt.get(&node).map_or("", graph::class_type);
                let data = json!({
                    "prompt_id": run.prompt_id, "node_id": node, "node_type": node_type,
                    "executed": executed,
                    "exception_message": format!("{}\n", error.message),
                    "exception_type": error.exception_type,
                    "traceback": [format!("  File \"comfyume sim-backend\", in {node_type}\n    raise {}\n", error.exception_type)],
                    "current_inputs": inputs,
                    "current_outputs": prompt.keys().collect::<Vec<_>>(),
                });
                add("execution_error", data, false);
            }
        }
        let success = messages.last().is_some_and(|m| m[0] == "execution_success");
        let status = json!({
            "status_str": if success { "success" } else { "error" },
            "completed": success,
            "messages": messages,
        });
        let outputs: Map<String, Value> = ui
            .iter()
            .map(|(id, u)| (id.clone(), u["output"].clone()))
            .collect();
        let meta: Map<String, Value> = ui
            .iter()
            .map(|(id, u)| (id.clone(), u["meta"].clone()))
            .collect();
        state.hub.set_current(None);
        state
            .queue
            .task_done(&item, status, Value::Object(outputs), Value::Object(meta));
        run.to_client(
            "executing",
            json!({"node": null, "prompt_id": run.prompt_id}),
        );
    }

    /// Computes the prompt's cache signatures and forgets results and node
    /// objects the prompt no longer has (stock's classic cache).
    async fn prepare(&mut self, prompt: &Map<String, Value>) -> HashMap<String, String> {
        let state = self.state.clone();
        let owned = prompt.clone();
        // IS_CHANGED reads uploaded files.
        let signatures = tokio::task::spawn_blocking(move || {
            graph::signatures(&owned, |_, node| {
                nodes::is_changed(graph::class_type(node), graph::inputs(node), &state.dirs)
            })
        })
        .await
        .unwrap_or_default();
        let used: std::collections::HashSet<&String> = signatures.values().collect();
        self.cache.retain(|sig, _| used.contains(sig));
        self.suffixes.retain(|(id, class), _| {
            prompt
                .get(id)
                .is_some_and(|n| graph::class_type(n) == class)
        });
        signatures
    }

    async fn run_nodes(
        &mut self,
        run: &Arc<Run>,
        prompt: &Map<String, Value>,
        outputs: &[String],
        signatures: &HashMap<String, String>,
        executed: &mut Vec<String>,
        ui: &mut UiOutputs,
    ) -> Result<(), Stop> {
        for node in self.plan(prompt, outputs, signatures)? {
            self.run_node(run, prompt, &node, signatures, executed, ui)
                .await?;
        }
        Ok(())
    }

    /// The nodes to visit, in order. Staging depends only on the graph and
    /// on what was cached when the prompt started, so the whole order can
    /// be known before anything runs.
    fn plan(
        &self,
        prompt: &Map<String, Value>,
        outputs: &[String],
        signatures: &HashMap<String, String>,
    ) -> Result<Vec<String>, Stop> {
        let catalogue = &self.state.catalogue;
        let is_cached = |id: &str| {
            signatures
                .get(id)
                .is_some_and(|s| self.cache.contains_key(s))
        };
        let is_output = |id: &str| {
            let class = prompt.get(id).map_or("", graph::class_type);
            catalogue
                .get(class)
                .is_some_and(|i| i["output_node"] == json!(true))
        };
        let mut list = ExecutionList::new(prompt, is_cached, is_output);
        for output in outputs {
            list.add_node(output);
        }
        let mut order = Vec::new();
        while !list.is_empty() {
            let node = list.stage().map_err(|stuck| {
                Stop::error(
                    stuck.first().map_or("", String::as_str),
                    NodeError {
                        exception_type: "comfy_execution.graph.DependencyCycleError".into(),
                        message: "Dependency cycle detected".into(),
                    },
                    Map::new(),
                )
            })?;
            list.complete(&node);
            order.push(node);
        }
        Ok(order)
    }

    async fn run_node(
        &mut self,
        run: &Arc<Run>,
        prompt: &Map<String, Value>,
        id: &str,
        signatures: &HashMap<String, String>,
        executed: &mut Vec<String>,
        ui: &mut UiOutputs,
    ) -> Result<(), Stop> {
        let Some(node) = prompt.get(id) else {
            // Validation keeps links inside the prompt; this is a backstop.
            return Err(Stop::error(
                id,
                NodeError {
                    exception_type: "KeyError".into(),
                    message: format!("'{id}'"),
                },
                Map::new(),
            ));
        };
        let class = graph::class_type(node);
        let signature = signatures.get(id).cloned().unwrap_or_default();
        if let Some(entry) = self.cache.get(&signature) {
            // A cached output node replays its UI without running.
            let output = entry
                .ui
                .as_ref()
                .map_or(Value::Null, |u| u["output"].clone());
            run.to_client(
                "executed",
                json!({"node": id, "display_node": id, "output": output, "prompt_id": run.prompt_id}),
            );
            if let (Some(entry_ui), true) = (&entry.ui, run.client_id.is_some()) {
                ui.push((id.to_owned(), entry_ui.clone()));
            }
            run.finish_progress(id);
            return Ok(());
        }

        run.start_progress(id);
        let inputs = self.resolve_inputs(node, signatures);
        if run.client_id.is_some() {
            self.state.hub.set_last_node(id);
        }
        run.to_client(
            "executing",
            json!({"node": id, "display_node": id, "prompt_id": run.prompt_id}),
        );
        let fail = |error: NodeError| Stop::error(id, error, describe_inputs(&inputs));
        if self.state.interrupt.take() {
            return Err(Stop::Interrupted {
                node: id.to_owned(),
            });
        }
        if self.state.options.fail_node.as_deref() == Some(class) {
            return Err(fail(NodeError {
                exception_type: "RuntimeError".into(),
                message: format!("Simulated failure of {class} (the simulator's fail_node option)"),
            }));
        }

        let suffix = self
            .suffixes
            .entry((id.to_owned(), class.to_owned()))
            .or_insert_with(nodes::temp_suffix)
            .clone();
        let host = NodeHost {
            run: run.clone(),
            node: id.to_owned(),
        };
        let class_owned = class.to_owned();
        let call_inputs = inputs.clone();
        let result = tokio::task::spawn_blocking(move || {
            nodes::run(&Call {
                class_type: &class_owned,
                inputs: &call_inputs,
                host: &host,
                temp_suffix: &suffix,
            })
        })
        .await;
        let output = match result {
            Ok(Ok(output)) => output,
            Ok(Err(Failure::Interrupted)) => {
                return Err(Stop::Interrupted {
                    node: id.to_owned(),
                });
            }
            Ok(Err(Failure::Error(error))) => return Err(fail(error)),
            Err(panic) => {
                return Err(fail(NodeError {
                    exception_type: "RuntimeError".into(),
                    message: format!("the simulator's {class} node crashed: {panic}"),
                }));
            }
        };
        let entry_ui = output.ui.map(|output| {
            json!({
                "meta": {"node_id": id, "display_node": id, "parent_node": null, "real_node_id": id},
                "output": output,
            })
        });
        if let Some(entry_ui) = &entry_ui {
            ui.push((id.to_owned(), entry_ui.clone()));
            run.to_client(
                "executed",
                json!({"node": id, "display_node": id, "output": entry_ui["output"], "prompt_id": run.prompt_id}),
            );
        }
        self.cache.insert(
            signature,
            Arc::new(CacheEntry {
                values: output.values,
                ui: entry_ui,
            }),
        );
        run.finish_progress(id);
        executed.push(id.to_owned());
        Ok(())
    }

    /// The node's inputs in prompt order, links replaced by upstream results.
    fn resolve_inputs(
        &self,
        node: &Value,
        signatures: &HashMap<String, String>,
    ) -> Vec<(String, Input)> {
        graph::inputs(node)
            .iter()
            .map(|(name, value)| {
                let input = match as_link(value) {
                    Some((from, socket)) => signatures
                        .get(from)
                        .and_then(|sig| self.cache.get(sig))
                        .and_then(|entry| entry.values.get(socket))
                        .map_or(Input::Value(Value::Null), |data| Input::Link(data.clone())),
                    None => Input::Value(value.clone()),
                };
                (name.clone(), input)
            })
            .collect()
    }
}

/// `current_inputs`: each input as a one-element list; values as they are,
/// linked data described (stock prints tensors as text).
fn describe_inputs(inputs: &[(String, Input)]) -> Map<String, Value> {
    inputs
        .iter()
        .map(|(name, input)| {
            let shown = match input {
                Input::Link(data) => json!(data.describe()),
                Input::Value(v @ (Value::Object(_) | Value::Array(_))) => json!(v.to_string()),
                Input::Value(v) => v.clone(),
            };
            (name.clone(), json!([shown]))
        })
        .collect()
}
