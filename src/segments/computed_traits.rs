//! User-defined computed traits, beside the segment definitions: checked
//! and stored, then backfilled over every profile's stored events.

use std::sync::Arc;

use super::SegmentService;
use super::custom::CompiledCustomTrait;
use crate::computed::custom::{Aggregation, CustomTraitDefinition};
use crate::service::ServiceError;

/// A definition as received.
#[derive(Debug, Clone, Default)]
pub struct ComputedTraitInput {
    pub name: String,
    pub event: String,
    pub aggregation: String,
    pub property: String,
    pub window_days: u32,
    pub condition: String,
}

impl SegmentService {
    /// Installs the stored definitions and resumes backfills that did not
    /// finish.
    pub fn load_computed_traits(self: &Arc<Self>) -> Result<(), ServiceError> {
        for definition in self.store.custom_traits()? {
            let name = definition.name.clone();
            match CompiledCustomTrait::compile(definition) {
                Ok(compiled) => {
                    let resume = !compiled.definition.ready;
                    let updated_at = compiled.definition.updated_at;
                    self.registry.custom_traits().install(compiled);
                    if resume {
                        self.start_trait_backfill(name, updated_at);
                    }
                }
                Err(error) => tracing::error!(
                    computed_trait = %name,
                    error = %error.message,
                    "a stored computed trait does not compile; it is inactive"
                ),
            }
        }
        Ok(())
    }

    pub async fn put_computed_trait(
        self: &Arc<Self>,
        input: ComputedTraitInput,
    ) -> Result<(CustomTraitDefinition, bool), ServiceError> {
        let aggregation: Aggregation = input.aggregation.parse().map_err(|message: String| {
            ServiceError::invalid("computed_trait.aggregation", message)
        })?;
        if input.condition.len() > self.config.rule_bytes_max {
            return Err(ServiceError::invalid(
                "computed_trait.where",
                format!("longer than {} bytes", self.config.rule_bytes_max),
            ));
        }
        let now = self.clock.now();
        let draft = CustomTraitDefinition {
            name: input.name.trim().to_owned(),
            event: input.event.trim().to_owned(),
            aggregation,
            property: input.property.trim().to_owned(),
            window_days: input.window_days,
            condition: input.condition,
            created_at: now,
            updated_at: now,
            ready: false,
        };
        let checked = CompiledCustomTrait::compile(draft).map_err(|error| {
            ServiceError::invalid(format!("computed_trait.{}", error.field), error.message)
        })?;
        let registry = self.registry.custom_traits();
        if registry.get(&checked.definition.name).is_none()
            && registry.len() >= self.config.computed_traits_max
        {
            return Err(ServiceError::FailedPrecondition(format!(
                "at most {} computed traits may be defined; delete one first",
                self.config.computed_traits_max
            )));
        }
        let (definition, created) = self
            .store
            .put_custom_trait(checked.definition.clone())
            .await?;
        registry.install(CompiledCustomTrait {
            definition: definition.clone(),
            condition: checked.condition,
        });
        self.start_trait_backfill(definition.name.clone(), definition.updated_at);
        Ok((definition, created))
    }

    pub fn get_computed_trait(&self, name: &str) -> Result<CustomTraitDefinition, ServiceError> {
        self.registry
            .custom_traits()
            .get(name)
            .map(|compiled| compiled.definition.clone())
            .ok_or_else(|| trait_not_found(name))
    }

    pub fn list_computed_traits(&self) -> Vec<CustomTraitDefinition> {
        self.registry
            .custom_traits()
            .all()
            .iter()
            .map(|compiled| compiled.definition.clone())
            .collect()
    }

    pub async fn delete_computed_trait(&self, name: &str) -> Result<(), ServiceError> {
        if self
            .store
            .delete_custom_trait(name.to_owned())
            .await?
            .is_none()
        {
            return Err(trait_not_found(name));
        }
        self.registry.custom_traits().remove(name);
        Ok(())
    }

    fn start_trait_backfill(self: &Arc<Self>, name: String, updated_at: crate::model::UnixMillis) {
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = async {
                let profiles = service.profiles.backfill_custom_trait(&name).await?;
                let ready = service
                    .store
                    .mark_custom_trait_ready(name.clone(), updated_at)
                    .await?;
                Ok::<_, ServiceError>((profiles, ready))
            }
            .await;
            match outcome {
                Ok((profiles, Some(definition))) => {
                    let registry = service.registry.custom_traits();
                    if let Some(current) = registry.get(&name)
                        && current.definition.updated_at == updated_at
                    {
                        registry.install(CompiledCustomTrait {
                            definition,
                            condition: current.condition.clone(),
                        });
                    }
                    tracing::info!(
                        computed_trait = %name,
                        profiles,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "computed trait backfilled"
                    );
                }
                Ok((_, None)) => {}
                Err(error) => {
                    tracing::error!(computed_trait = %name, %error, "computed trait backfill failed");
                }
            }
        });
    }
}

fn trait_not_found(name: &str) -> ServiceError {
    ServiceError::NotFound(format!("computed trait {name} does not exist"))
}
