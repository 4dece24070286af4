use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use muscle::app::{App, Settings, shutdown_signal};
use muscle::callback::CallbackPolicy;
use muscle::config::{Cli, Command};
use muscle::endpoint::EndpointPolicy;
use muscle::http::{CorsOrigins, HttpOptions};
use muscle::{cli, store, telemetry};

fn main() -> ExitCode {
    muscle::process::configure();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the runtime: {error}"
            );
            return ExitCode::from(3);
        }
    };
    let cli = Cli::parse();
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::from(3)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            telemetry::init(args.common.db.log_format, telemetry::SERVICE_FILTER);
            std::fs::create_dir_all(&args.common.db.data_dir)?;
            // A token HTTP cannot carry, a bad MUSCLE_CORS_ORIGINS, MUSCLE_CALLBACK_HOSTS or
            // MUSCLE_ENDPOINT_HOSTS entry stops the start, before anything is served. An empty token (as
            // .env.example ships it) means no authentication.
            let api_token = args.api_token.clone().filter(|t| !t.is_empty());
            let checked = api_token
                .as_deref()
                .map_or(Ok(()), muscle::http::check_token)
                .and_then(|()| CorsOrigins::parse(&args.cors_origins))
                .and_then(|origins| {
                    CallbackPolicy::from_env(&args.callback_hosts).map(|hosts| (origins, hosts))
                })
                .and_then(|checked| {
                    EndpointPolicy::from_env(&args.common.endpoint_hosts).map(|_| checked)
                });
            let (cors_origins, callbacks) = match checked {
                Ok(checked) => checked,
                Err(message) => {
                    let _ = writeln!(std::io::stderr(), "error: {message}");
                    return Ok(ExitCode::from(2));
                }
            };
            let mut settings = Settings::from_common(&args.common, &args.queue, args.workers)?;
            settings.bind = Some(args.bind);
            settings.http = HttpOptions {
                api_token,
                cors_origins,
                max_body_bytes: args.max_body_bytes,
                callbacks,
                max_concurrent_requests: args.max_concurrent_requests,
                max_concurrent_uploads: args.max_concurrent_uploads,
                request_timeout: std::time::Duration::from_secs(
                    args.request_timeout_seconds.max(1),
                ),
                body_grace: std::time::Duration::from_secs(args.body_timeout_seconds.max(1)),
                body_min_bytes_per_second: args.body_min_bytes_per_second.max(1),
                connections: muscle::http::ConnectionLimits {
                    header_read_timeout: std::time::Duration::from_secs(
                        args.header_timeout_seconds.max(1),
                    ),
                    max_connections: args.max_connections,
                    ..Default::default()
                },
            };
            tracing::info!(
                database = %store::redact(&settings.database_url),
                model_dir = %settings.model_dir.display(),
                workers = settings.workers,
                callback_hosts = %settings
                    .http
                    .callbacks
                    .hosts()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                endpoint_hosts = %settings
                    .endpoints
                    .policy()
                    .hosts()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                auth = %if settings.http.api_token.is_some() { "on" } else { "off" },
                "starting"
            );
            App::build(settings)
                .await?
                .run_until_stopped(shutdown_signal())
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => {
            telemetry::init(args.common.db.log_format, telemetry::SERVICE_FILTER);
            if let Err(message) = EndpointPolicy::from_env(&args.common.endpoint_hosts) {
                let _ = writeln!(std::io::stderr(), "error: {message}");
                return Ok(ExitCode::from(2));
            }
            let settings = Settings::from_common(&args.common, &args.queue, args.workers.max(1))?;
            tracing::info!(
                database = %store::redact(&settings.database_url),
                workers = settings.workers,
                "starting workers"
            );
            App::build(settings)
                .await?
                .run_until_stopped(shutdown_signal())
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait(args) => Ok(cli::wait::run(args).await),
        Command::Migrate(db) => {
            telemetry::init(db.log_format, telemetry::SERVICE_FILTER);
            std::fs::create_dir_all(&db.data_dir)?;
            let url = db.database_url();
            store::connect(&url).await?;
            let _ = writeln!(
                std::io::stderr(),
                "migrations applied to {}",
                store::redact(&url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            print!("{}", muscle::http::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => {
            telemetry::init(args.common.db.log_format, telemetry::COMMAND_FILTER);
            Ok(cli::eval::run(args).await)
        }
        Command::Compare(args) => {
            telemetry::init(args.common.db.log_format, telemetry::COMMAND_FILTER);
            Ok(cli::compare::run(args).await)
        }
        Command::Train(args) => {
            telemetry::init(args.common.db.log_format, telemetry::COMMAND_FILTER);
            Ok(cli::train::run(args).await)
        }
    }
}
