//! `runtime-config plan` and `runtime-config live`: the parameter contract,
//! on its own (`plan`, no cloud call) and against SSM's metadata (`live`,
//! DescribeParameters only, so it never reads or decrypts a value).
//!
//! The contract is `runtime.contract_file` (written by host bootstrap from
//! the infrastructure outputs) merged with `runtime.parameters`
//! ([`Contract::load`]); `plan` shows which source each entry comes from.
//!
//! Markers (`WAVEMAP_RUNTIME_CONFIG_*`): `_MODE` (`plan`|`live`), `_PREFIX`,
//! `_GROUPS`, `_CONTRACT_FILE` (its path), `_CONTRACT_FILE_STATE` (`loaded`
//! or `absent`), `_FROM_FILE_COUNT`, `_PARAMETER_COUNT`, `_REQUIRED_COUNT`,
//! `_OPTIONAL_COUNT`, and
//! for `live` also `_PRESENT_COUNT`, `_MISSING_COUNT`,
//! `_MISSING_REQUIRED_COUNT`, `_WRONG_TYPE_COUNT`, `_UNDECLARED_COUNT`,
//! `_UNMAPPABLE_COUNT`, the names behind them (`_MISSING`, `_WRONG_TYPE`,
//! `_UNDECLARED`, `_UNMAPPABLE`), and `_RESULT` (`planned` for plan;
//! `ready` or `blocked` for live, which exits 3 when blocked).

use serde_json::json;

use super::Invocation;
use crate::aws;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::output::Report;
use crate::ssm::{self, Check, Contract};

const P: &str = "WAVEMAP_RUNTIME_CONFIG";

/// Lines of unproblematic parameters printed by `live` before "... and N more".
const SHOWN_LINES: usize = 40;

/// `runtime-config plan`: print the contract, grouped. No cloud call.
pub fn plan(inv: &mut Invocation<'_>) -> Result<()> {
    let contract = Contract::load(inv.config)?;
    eprintln!(
        "parameter contract under {} ({} required, {} optional)",
        contract.prefix,
        contract.required_count(),
        contract.optional_count()
    );
    match &contract.contract_file {
        Some(path) => eprintln!(
            "contract file {path}: {} entries, merged with runtime.parameters",
            contract.from_file_count()
        ),
        None => eprintln!(
            "no contract file at {}: runtime.parameters is the whole contract",
            inv.config.runtime.contract_file
        ),
    }
    for group in contract.file_groups() {
        eprintln!("{group}.env");
        let mut any = false;
        for d in contract.declared.iter().filter(|d| d.group == group) {
            any = true;
            eprintln!(
                "  {:<28} {:<12} {:<8} {:<13} <- {}",
                d.variable,
                d.kind.to_string(),
                if d.required { "required" } else { "optional" },
                d.origin.to_string(),
                d.name
            );
        }
        if !any {
            eprintln!("  (no declared parameters)");
        }
    }
    eprintln!(
        "undeclared parameters under the prefix are rendered by the convention {}<group>/<VAR> -> <group>.env as VAR",
        contract.prefix
    );
    contract_markers(inv.report, inv.config, &contract, "plan");
    inv.report.marker(&format!("{P}_RESULT"), "planned");
    inv.report
        .set_data(json!({ "contract": contract_json(&contract) }));
    Ok(())
}

/// `runtime-config live`: DescribeParameters under the prefix, compared
/// with the contract. Exit 3 when a required parameter is missing, a type
/// is wrong, or a name cannot be rendered.
pub async fn live(inv: &mut Invocation<'_>) -> Result<()> {
    let contract = Contract::load(inv.config)?;
    contract_markers(inv.report, inv.config, &contract, "live");
    let sdk = aws::sdk_config(inv.config).await;
    let client = aws::ssm_client(&sdk, inv.config);
    log::info!(stage = "runtime-config"; "describing parameters under {} (metadata only)", contract.prefix);
    let described = match ssm::describe(&client, &contract.prefix).await {
        Ok(described) => described,
        Err(e) => {
            let result = match &e {
                Error::Unavailable { .. } => "unavailable",
                _ => "failed",
            };
            inv.report.marker(&format!("{P}_RESULT"), result);
            return Err(e);
        }
    };
    let check = contract.check(&described);

    // Problems first and all of them; the rest bounded, since SSM keeps only
    // 8,000 characters of stderr and the markers carry the counts anyway.
    let mut fine = Vec::new();
    for d in &contract.declared {
        if check.present.contains(&d.name) {
            fine.push(format!("  {:<56} present", d.name));
        } else if let Some(w) = check.wrong_type.iter().find(|w| w.name == d.name) {
            eprintln!(
                "  {:<56} WRONG TYPE ({}, expected {})",
                d.name, w.actual, w.expected
            );
        } else if d.required {
            eprintln!("  {:<56} MISSING (required)", d.name);
        } else {
            fine.push(format!("  {:<56} missing (optional)", d.name));
        }
    }
    for u in &check.unmappable {
        eprintln!("  {:<56} CANNOT BE RENDERED: {}", u.name, u.problem);
    }
    fine.extend(check.undeclared.iter().map(|u| {
        format!(
            "  {:<56} undeclared -> {}.env as {}",
            u.name, u.group, u.variable
        )
    }));
    for line in fine.iter().take(SHOWN_LINES) {
        eprintln!("{line}");
    }
    if fine.len() > SHOWN_LINES {
        eprintln!(
            "  ... and {} more (see the markers or --json)",
            fine.len() - SHOWN_LINES
        );
    }

    check_markers(inv.report, &check);
    let blocked = check.gate();
    inv.report.marker(
        &format!("{P}_RESULT"),
        if blocked.is_err() { "blocked" } else { "ready" },
    );
    inv.report.set_data(json!({
        "contract": contract_json(&contract),
        "present": check.present,
        "missing": check.missing.iter().map(|d| json!({"name": d.name, "required": d.required})).collect::<Vec<_>>(),
        "wrong_type": check.wrong_type.iter().map(|w| json!({"name": w.name, "expected": w.expected.to_string(), "actual": w.actual.to_string()})).collect::<Vec<_>>(),
        "undeclared": check.undeclared.iter().map(|u| json!({"name": u.name, "group": u.group, "variable": u.variable})).collect::<Vec<_>>(),
        "unmappable": check.unmappable.iter().map(|u| json!({"name": u.name, "problem": u.problem})).collect::<Vec<_>>(),
    }));
    blocked
}

fn contract_markers(report: &mut Report, config: &Config, contract: &Contract, mode: &str) {
    report.marker(&format!("{P}_MODE"), mode);
    report.marker(&format!("{P}_PREFIX"), &contract.prefix);
    report.marker(&format!("{P}_GROUPS"), contract.file_groups().join(","));
    report.marker(
        &format!("{P}_CONTRACT_FILE"),
        config.runtime.contract_file.to_string(),
    );
    report.marker(
        &format!("{P}_CONTRACT_FILE_STATE"),
        if contract.contract_file.is_some() {
            "loaded"
        } else {
            "absent"
        },
    );
    report.marker(&format!("{P}_FROM_FILE_COUNT"), contract.from_file_count());
    report.marker(&format!("{P}_PARAMETER_COUNT"), contract.declared.len());
    report.marker(&format!("{P}_REQUIRED_COUNT"), contract.required_count());
    report.marker(&format!("{P}_OPTIONAL_COUNT"), contract.optional_count());
}

fn check_markers(report: &mut Report, check: &Check) {
    report.marker(&format!("{P}_PRESENT_COUNT"), check.present.len());
    report.marker(&format!("{P}_MISSING_COUNT"), check.missing.len());
    report.marker(
        &format!("{P}_MISSING_REQUIRED_COUNT"),
        check.missing_required().count(),
    );
    report.marker(&format!("{P}_WRONG_TYPE_COUNT"), check.wrong_type.len());
    report.marker(&format!("{P}_UNDECLARED_COUNT"), check.undeclared.len());
    report.marker(&format!("{P}_UNMAPPABLE_COUNT"), check.unmappable.len());
    let names = |it: &mut dyn Iterator<Item = &str>| it.collect::<Vec<_>>().join(",");
    report.marker(
        &format!("{P}_MISSING"),
        names(&mut check.missing.iter().map(|d| d.name.as_str())),
    );
    report.marker(
        &format!("{P}_WRONG_TYPE"),
        names(&mut check.wrong_type.iter().map(|w| w.name.as_str())),
    );
    report.marker(
        &format!("{P}_UNDECLARED"),
        names(&mut check.undeclared.iter().map(|u| u.name.as_str())),
    );
    report.marker(
        &format!("{P}_UNMAPPABLE"),
        names(&mut check.unmappable.iter().map(|u| u.name.as_str())),
    );
}

fn contract_json(contract: &Contract) -> serde_json::Value {
    json!({
        "prefix": contract.prefix,
        "contract_file": contract.contract_file,
        "groups": contract.file_groups(),
        "parameters": contract.declared.iter().map(|d| json!({
            "name": d.name,
            "type": d.kind.to_string(),
            "required": d.required,
            "group": d.group,
            "variable": d.variable,
            "source": d.origin.to_string(),
        })).collect::<Vec<_>>(),
    })
}
