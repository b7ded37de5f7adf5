//! The single writer: drains queued calls, applies a group of them as one
//! atomic batch, makes the batch durable, then answers every caller of the
//! group (group commit).

use std::fs::File;

use tokio::sync::{mpsc, oneshot};

use super::apply::{Counters, apply_call, apply_unmerge};
use super::overlay::GroupWrites;
use super::{ApplyResults, StoreError};
use crate::identity::MergeRules;
use crate::model::{UnmergeCall, UnmergeOutcome, WriteCall};

pub enum Command {
    Apply {
        calls: Vec<WriteCall>,
        reply: oneshot::Sender<Result<ApplyResults, StoreError>>,
    },
    Unmerge {
        call: UnmergeCall,
        reply: oneshot::Sender<Result<UnmergeOutcome, StoreError>>,
    },
    /// Finish what is queued ahead, then stop.
    Shutdown,
}

impl Command {
    fn call_count(&self) -> usize {
        match self {
            Command::Apply { calls, .. } => calls.len(),
            Command::Unmerge { .. } => 1,
            Command::Shutdown => 0,
        }
    }
}

pub struct Writer {
    pub db: sled::Db,
    pub tree: sled::Tree,
    /// sled's log file; `sled::Db::flush` only issues `sync_file_range`,
    /// which neither persists file metadata nor flushes the device cache,
    /// so every group is followed by an `fdatasync` of this file.
    pub log_file: File,
    pub counters: Counters,
    pub group_calls_max: usize,
    pub rules: MergeRules,
}

/// Answers computed for a group, sent once the group is durable.
enum Pending {
    Apply {
        results: ApplyResults,
        reply: oneshot::Sender<Result<ApplyResults, StoreError>>,
    },
    Unmerge {
        result: Result<UnmergeOutcome, StoreError>,
        reply: oneshot::Sender<Result<UnmergeOutcome, StoreError>>,
    },
}

impl Pending {
    fn answer(self) {
        // A caller that gave up waiting still had its write applied;
        // nothing to undo.
        match self {
            Pending::Apply { results, reply } => {
                let _ = reply.send(Ok(results));
            }
            Pending::Unmerge { result, reply } => {
                let _ = reply.send(result);
            }
        }
    }

    fn fail(self, error: &StoreError) {
        let failure = || StoreError::CommitFailed(error.to_string());
        match self {
            Pending::Apply { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Pending::Unmerge { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
        }
    }
}

impl Writer {
    pub fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut stopping = false;
        while !stopping {
            let Some(first) = queue.blocking_recv() else {
                break;
            };
            let mut calls_in_group = first.call_count();
            let mut commands = vec![first];
            while calls_in_group < self.group_calls_max
                && !matches!(commands.last(), Some(Command::Shutdown))
            {
                match queue.try_recv() {
                    Ok(command) => {
                        calls_in_group += command.call_count();
                        commands.push(command);
                    }
                    Err(_) => break,
                }
            }
            if let Err(error) = self.commit_group(commands, &mut stopping) {
                tracing::error!(%error, "group commit failed; refusing further writes");
                // The database state is unknown: answer everyone still
                // queued with an error rather than risk acknowledging
                // writes that are not durable.
                queue.close();
                while let Ok(command) = queue.try_recv() {
                    match command {
                        Command::Apply { reply, .. } => {
                            let _ = reply.send(Err(StoreError::CommitFailed(error.to_string())));
                        }
                        Command::Unmerge { reply, .. } => {
                            let _ = reply.send(Err(StoreError::CommitFailed(error.to_string())));
                        }
                        Command::Shutdown => {}
                    }
                }
                return;
            }
        }
        if let Err(error) = self.make_durable() {
            tracing::error!(%error, "final flush failed");
        }
    }

    fn commit_group(
        &mut self,
        commands: Vec<Command>,
        stopping: &mut bool,
    ) -> Result<(), StoreError> {
        let counters_before = self.counters;
        let mut group = GroupWrites::new(&self.tree);
        let mut pending = Vec::with_capacity(commands.len());
        for command in commands {
            match command {
                Command::Apply { calls, reply } => {
                    let mut results = Vec::with_capacity(calls.len());
                    for call in &calls {
                        let mut writes = group.call();
                        let mut counters = self.counters;
                        let result = apply_call(&mut writes, &mut counters, &self.rules, call);
                        if result.is_ok() {
                            writes.commit();
                            self.counters = counters;
                        }
                        results.push(result);
                    }
                    pending.push(Pending::Apply { results, reply });
                }
                Command::Unmerge { call, reply } => {
                    let mut writes = group.call();
                    let mut counters = self.counters;
                    let result = apply_unmerge(&mut writes, &mut counters, &call);
                    if result.is_ok() {
                        writes.commit();
                        self.counters = counters;
                    }
                    pending.push(Pending::Unmerge { result, reply });
                }
                Command::Shutdown => *stopping = true,
            }
        }

        let committed = if group.is_empty() {
            Ok(())
        } else {
            let batch = group.into_batch();
            self.tree
                .apply_batch(batch)
                .map_err(StoreError::from)
                .and_then(|()| self.make_durable())
        };
        match committed {
            Ok(()) => {
                pending.into_iter().for_each(Pending::answer);
                Ok(())
            }
            Err(error) => {
                self.counters = counters_before;
                for answer in pending {
                    answer.fail(&error);
                }
                Err(error)
            }
        }
    }

    fn make_durable(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.log_file.sync_data()?;
        Ok(())
    }
}
