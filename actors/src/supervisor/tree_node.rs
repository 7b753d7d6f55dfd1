//! The status tree's JSON shape (DESIGN.md §2).

use serde::{Deserialize, Serialize};

use super::guard::ExitReason;

/// Lifecycle state of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Being started.
    Starting,
    /// Up.
    Running,
    /// Exited; a restart is under way.
    Restarting,
    /// Exited; waiting out a backoff delay before restarting.
    Backoff,
    /// Could not be kept up (start failed, intensity exceeded).
    Failed,
    /// Stopped on purpose and not restarted.
    Stopped,
}

/// How and when a node last exited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastExit {
    /// normal | error | panic.
    pub reason: ExitReason,
    /// The error or panic message.
    pub message: Option<String>,
    /// Milliseconds since the epoch.
    pub at: u64,
}

/// One node of the supervision tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeNode {
    /// Child id.
    pub id: String,
    /// Node kind (`supervisor`, `store`, `agent`, `ws`).
    pub kind: String,
    /// Lifecycle state.
    pub state: NodeState,
    /// Restarts since the gateway started.
    pub restarts: u32,
    /// The last exit, if any.
    pub last_exit: Option<LastExit>,
    /// When the current instance started (ms since the epoch).
    pub started_at: Option<u64>,
    /// Work queued in the actor, as it last reported.
    pub mailbox: usize,
    /// While in `backoff`: when the next start attempt is due (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<u64>,
    /// Children (for supervisors; possibly truncated, see `childCount`).
    pub children: Vec<TreeNode>,
    /// Total number of children when `children` was truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_count: Option<usize>,
    /// Children this supervisor killed that are still running (a handler blocking its
    /// thread cannot be stopped from outside); they leak until the process exits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unstoppable: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl TreeNode {
    /// Finds a node by id anywhere below (or at) this one.
    pub fn find(&self, id: &str) -> Option<&TreeNode> {
        if self.id == id {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(id))
    }

    /// Nodes that could not be stopped, in this node and everything below it.
    pub fn unstoppable_total(&self) -> usize {
        self.unstoppable
            + self
                .children
                .iter()
                .map(TreeNode::unstoppable_total)
                .sum::<usize>()
    }
}
