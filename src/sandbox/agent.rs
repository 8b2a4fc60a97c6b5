//! The agents cci can start in a session. Adding one is one entry in
//! [`AGENTS`]: its name, its program, the folder in the home directory that
//! holds its state, and how it is told to skip permission prompts, start a
//! new conversation with a given id, or resume one.

use crate::session::AgentFiles;

/// How to start one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentDef {
    /// Its name in `--agent` / `CCI_AGENT`.
    pub name: &'static str,
    /// The program, looked up on the container's `PATH`.
    pub binary: &'static str,
    /// Its state folder, credentials and settings under the home directory.
    pub files: AgentFiles,
    /// Arguments that let it act without asking (the container is the sandbox).
    pub unattended_args: &'static [&'static str],
    /// How a new conversation gets its id (`None`: the agent picks its own).
    pub new_session: Option<&'static str>,
    /// How a conversation is resumed by id.
    pub resume_session: Option<&'static str>,
    /// How an agent that picks its own conversation ids continues its
    /// latest one (its state folder restored): words before its other
    /// arguments (a subcommand) and after them.
    pub resume_latest: (&'static [&'static str], &'static [&'static str]),
    /// How it works on one prompt and exits (`cci run --prompt`): words
    /// before its other arguments (a subcommand), and after them, where
    /// [`PROMPT`] stands for the prompt.
    pub prompt: (&'static [&'static str], &'static [&'static str]),
}

/// Stands for the prompt in [`AgentDef::prompt`].
pub const PROMPT: &str = "{prompt}";

/// Every agent cci knows; the first is the default.
pub const AGENTS: &[AgentDef] = &[
    AgentDef {
        name: "claude",
        binary: "claude",
        files: AgentFiles {
            state_dir: ".claude",
            credentials: &[".claude/.credentials.json", ".claude.json"],
            // First-run questions answered, so the agent starts straight to
            // its prompt (Claude Code 2.1: the keys it reads before each):
            // onboarding and theme (`hasCompletedOnboarding`); the folder
            // trust dialog (`projects./workspace.hasTrustDialogAccepted`);
            // the bypass-permissions warning (`skipDangerousModePermissionPrompt`
            // in settings, `bypassPermissionsModeAccepted` before 2.1); "Make
            // auto mode your default permission mode?", asked whenever the
            // user settings name a default mode (`hasSeenAutoDefaultNudge`).
            // The container is the sandbox, hence bypassPermissions.
            settings: &[
                (
                    ".claude.json",
                    r#"{"hasCompletedOnboarding": true, "bypassPermissionsModeAccepted": true,
                        "hasSeenAutoDefaultNudge": true,
                        "projects": {"/workspace": {"hasTrustDialogAccepted": true}}}"#,
                ),
                (
                    ".claude/settings.json",
                    r#"{"permissions": {"defaultMode": "bypassPermissions"},
                        "skipDangerousModePermissionPrompt": true}"#,
                ),
            ],
        },
        unattended_args: &["--dangerously-skip-permissions"],
        new_session: Some("--session-id"),
        resume_session: Some("--resume"),
        resume_latest: (&[], &[]),
        // Print mode: works on the prompt, prints the answer, exits.
        prompt: (&[], &["-p", PROMPT]),
    },
    AgentDef {
        name: "opencode",
        binary: "opencode",
        files: AgentFiles {
            state_dir: ".local/share/opencode",
            credentials: &[".local/share/opencode/auth.json"],
            settings: &[],
        },
        unattended_args: &[],
        new_session: None,
        // Its own ids (not cci's): the latest conversation of the restored
        // state folder.
        resume_session: None,
        resume_latest: (&[], &["--continue"]),
        prompt: (&["run"], &[PROMPT]),
    },
    AgentDef {
        name: "codex",
        binary: "codex",
        files: AgentFiles {
            state_dir: ".codex",
            credentials: &[".codex/auth.json"],
            settings: &[],
        },
        unattended_args: &["--dangerously-bypass-approvals-and-sandbox"],
        new_session: None,
        resume_session: None,
        resume_latest: (&["resume"], &["--last"]),
        prompt: (&["exec"], &[PROMPT]),
    },
    AgentDef {
        name: "aider",
        binary: "aider",
        files: AgentFiles {
            state_dir: ".aider",
            credentials: &[],
            settings: &[],
        },
        unattended_args: &["--yes-always"],
        new_session: None,
        resume_session: None,
        // Its chat history lives in the workspace (.aider.chat.history.md).
        resume_latest: (&[], &["--restore-chat-history"]),
        prompt: (&[], &["--message", PROMPT]),
    },
];

/// An unknown agent name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown agent {0:?}; known agents: {known}", known = names())]
pub struct UnknownAgent(pub String);

fn names() -> String {
    AGENTS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
}

/// The agent a session starts, with its program possibly overridden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Which one.
    pub def: AgentDef,
    /// The program to run (the registry's, or an override such as a full path).
    pub binary: String,
}

impl Agent {
    /// The agent called `name`, run as `binary` when given.
    pub fn named(name: &str, binary: Option<&str>) -> Result<Agent, UnknownAgent> {
        let def = *AGENTS
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| UnknownAgent(name.to_string()))?;
        Ok(Agent {
            def,
            binary: binary.unwrap_or(def.binary).to_string(),
        })
    }

    /// The default agent (`claude`).
    pub fn default_agent() -> Agent {
        Agent {
            def: AGENTS[0],
            binary: AGENTS[0].binary.to_string(),
        }
    }

    /// Its command line for working on `prompt` alone, non-interactively,
    /// as the new conversation `id`; `extra` (`[tool] args`) before the prompt.
    pub fn prompt_command(&self, id: &str, prompt: &str, extra: &[String]) -> Vec<String> {
        let (before, after) = self.def.prompt;
        let mut argv = vec![self.binary.clone()];
        argv.extend(before.iter().map(|a| a.to_string()));
        argv.extend(self.command(id, false).into_iter().skip(1));
        argv.extend(extra.iter().cloned());
        argv.extend(after.iter().map(|a| {
            if *a == PROMPT {
                prompt.to_string()
            } else {
                a.to_string()
            }
        }));
        argv
    }

    /// Its command line for session `id`: a new conversation, or a resumed one.
    pub fn command(&self, id: &str, resume: bool) -> Vec<String> {
        let words = |w: &[&str]| w.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let mut argv = vec![self.binary.clone()];
        let latest = resume && self.def.resume_session.is_none();
        if latest {
            argv.extend(words(self.def.resume_latest.0));
        }
        argv.extend(words(self.def.unattended_args));
        let flag = if resume {
            self.def.resume_session
        } else {
            self.def.new_session
        };
        if let Some(flag) = flag {
            argv.push(flag.to_string());
            argv.push(id.to_string());
        }
        if latest {
            argv.extend(words(self.def.resume_latest.1));
        }
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_match_the_configuration_vocabulary_in_order() {
        let names: Vec<&str> = AGENTS.iter().map(|a| a.name).collect();
        assert_eq!(names, crate::config::AGENT_NAMES);
    }

    #[test]
    fn claude_runs_unattended_with_the_session_id() {
        let a = Agent::default_agent();
        assert_eq!(a.def.name, "claude");
        assert_eq!(
            a.command("u-1", false),
            [
                "claude",
                "--dangerously-skip-permissions",
                "--session-id",
                "u-1"
            ]
        );
        assert_eq!(
            a.command("u-1", true),
            [
                "claude",
                "--dangerously-skip-permissions",
                "--resume",
                "u-1"
            ]
        );
    }

    #[test]
    fn claude_settings_answer_every_known_first_run_question() {
        let v = |rel: &str| -> serde_json::Value {
            let (_, text) = AGENTS[0]
                .files
                .settings
                .iter()
                .find(|(r, _)| *r == rel)
                .unwrap();
            serde_json::from_str(text).unwrap()
        };
        let config = v(".claude.json");
        for key in [
            "hasCompletedOnboarding",
            "bypassPermissionsModeAccepted",
            "hasSeenAutoDefaultNudge",
        ] {
            assert_eq!(config[key], true, "{key}");
        }
        assert_eq!(
            config["projects"]["/workspace"]["hasTrustDialogAccepted"],
            true
        );
        let settings = v(".claude/settings.json");
        assert_eq!(settings["skipDangerousModePermissionPrompt"], true);
        assert_eq!(settings["permissions"]["defaultMode"], "bypassPermissions");
    }

    #[test]
    fn the_default_image_script_installs_every_agent() {
        let script = crate::image::DEFAULT_SCRIPT;
        for a in AGENTS {
            assert!(
                script.contains(&format!("        {})\n", a.name)),
                "build-cci.sh has no case for {}",
                a.name
            );
        }
    }

    #[test]
    fn agents_with_ids_of_their_own_continue_their_latest_conversation() {
        let c = |name: &str, resume: bool| Agent::named(name, None).unwrap().command("u-1", resume);
        assert_eq!(c("opencode", false), ["opencode"]);
        assert_eq!(c("opencode", true), ["opencode", "--continue"]);
        assert_eq!(
            c("codex", true),
            [
                "codex",
                "resume",
                "--dangerously-bypass-approvals-and-sandbox",
                "--last"
            ]
        );
        assert_eq!(
            c("aider", true),
            ["aider", "--yes-always", "--restore-chat-history"]
        );
        assert_eq!(c("aider", false), ["aider", "--yes-always"]);
    }

    #[test]
    fn one_prompt_runs_each_agent_non_interactively() {
        let p = |name: &str| {
            Agent::named(name, None)
                .unwrap()
                .prompt_command("u-1", "fix it; $(x)", &["--v".into()])
        };
        assert_eq!(
            p("claude"),
            [
                "claude",
                "--dangerously-skip-permissions",
                "--session-id",
                "u-1",
                "--v",
                "-p",
                "fix it; $(x)"
            ]
        );
        assert_eq!(p("opencode"), ["opencode", "run", "--v", "fix it; $(x)"]);
        assert_eq!(
            p("codex"),
            [
                "codex",
                "exec",
                "--dangerously-bypass-approvals-and-sandbox",
                "--v",
                "fix it; $(x)"
            ]
        );
        assert_eq!(
            p("aider"),
            ["aider", "--yes-always", "--v", "--message", "fix it; $(x)"]
        );
    }

    #[test]
    fn binary_override_and_unknown_names() {
        let a = Agent::named("claude", Some("/opt/fake agent")).unwrap();
        assert_eq!(a.command("x", false)[0], "/opt/fake agent");
        assert_eq!(
            Agent::named("aider", None).unwrap().command("x", false),
            ["aider", "--yes-always"]
        );
        let e = Agent::named("claud", None).unwrap_err().to_string();
        assert!(e.contains("claud") && e.contains("claude, opencode"), "{e}");
    }
}
