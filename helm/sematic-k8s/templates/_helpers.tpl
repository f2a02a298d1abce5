{{/*
Names, labels, images, and the settings several templates share.
*/}}

{{- define "sematic-k8s.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<chart>", or just the release name when it already contains the chart name. */}}
{{- define "sematic-k8s.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sematic-k8s.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels. Call with (dict "ctx" $ "component" "server"). */}}
{{- define "sematic-k8s.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sematic-k8s.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Standard labels. Call with (dict "ctx" $ "component" "server"). */}}
{{- define "sematic-k8s.labels" -}}
helm.sh/chart: {{ include "sematic-k8s.chart" .ctx }}
{{ include "sematic-k8s.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: sematic-k8s
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* An image reference: repository[:tag]@digest when a digest is given (the digest decides; the tag is for
people), else repository:tag. Call with (dict "image" .Values.image "defaultTag" .Chart.AppVersion). */}}
{{- define "sematic-k8s.image" -}}
{{- if and .image.digest .image.tag -}}
{{- printf "%s:%s@%s" .image.repository (toString .image.tag) .image.digest -}}
{{- else if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .defaultTag .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* The server image: there is no public one, so its repository must be given (a registry the nodes pull from). */}}
{{- define "sematic-k8s.serverImage" -}}
{{- $_ := required "image.repository is required: the server image in a registry your nodes pull from, e.g. ghcr.io/acme/sematic-k8s-server (build and push it with `python -m sematic_k8s.packaging.images server --tag REGISTRY/sematic-k8s-server:TAG --push`, then set image.digest to the sha256 it prints)" .Values.image.repository -}}
{{- include "sematic-k8s.image" (dict "image" .Values.image "defaultTag" .Chart.AppVersion) -}}
{{- end -}}

{{/* The namespace driver Jobs and worker pods run in. */}}
{{- define "sematic-k8s.runNamespace" -}}
{{- default .Release.Namespace .Values.runs.namespace -}}
{{- end -}}

{{- define "sematic-k8s.serverServiceAccountName" -}}
{{- if .Values.server.serviceAccount.create -}}
{{- default (printf "%s-server" (include "sematic-k8s.fullname" .)) .Values.server.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.server.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The server's URL inside the cluster (what drivers use): server.inClusterUrl, else its Service's DNS name. */}}
{{- define "sematic-k8s.serverUrl" -}}
{{- if .Values.server.inClusterUrl -}}
{{- trimSuffix "/" .Values.server.inClusterUrl -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%v" (include "sematic-k8s.fullname" .) .Release.Namespace .Values.service.port -}}
{{- end -}}
{{- end -}}

{{/* -- Database ------------------------------------------------------------------------------------ */}}

{{- define "sematic-k8s.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "sematic-k8s.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fail early on contradictory database settings. */}}
{{- define "sematic-k8s.database.validate" -}}
{{- $ext := .Values.database.external -}}
{{- if and .Values.postgresql.enabled (or $ext.url $ext.existingSecret) -}}
{{- fail "database.external is set: also set postgresql.enabled=false (the bundled PostgreSQL would be unused)" -}}
{{- end -}}
{{- if and (not .Values.postgresql.enabled) (not (or $ext.url $ext.existingSecret)) -}}
{{- fail "postgresql.enabled=false needs database.external.url or database.external.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the database URL the server reads. */}}
{{- define "sematic-k8s.database.secretName" -}}
{{- if .Values.database.external.existingSecret -}}
{{- .Values.database.external.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "sematic-k8s.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "sematic-k8s.database.secretKey" -}}
{{- if .Values.database.external.existingSecret -}}
{{- .Values.database.external.existingSecretKey -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the bundled PostgreSQL's password: postgresql.auth.existingSecret, else
"<fullname>-postgresql" (from postgresql.auth.password, or generated once by the secrets hook). */}}
{{- define "sematic-k8s.postgresql.secretName" -}}
{{- default (printf "%s-postgresql" (include "sematic-k8s.fullname" .)) .Values.postgresql.auth.existingSecret -}}
{{- end -}}

{{- define "sematic-k8s.postgresql.secretKey" -}}
{{- if .Values.postgresql.auth.existingSecret -}}
{{- .Values.postgresql.auth.existingSecretKey -}}
{{- else -}}
password
{{- end -}}
{{- end -}}

{{/* "true" when the secrets hook generates the bundled PostgreSQL's password (no value, no existing Secret). */}}
{{- define "sematic-k8s.postgresql.generated" -}}
{{- if and .Values.postgresql.enabled (not .Values.postgresql.auth.password) (not .Values.postgresql.auth.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{/* PGPASSWORD for the server and the migration Job (libpq reads it: the URL holds no password). */}}
{{- define "sematic-k8s.postgresql.passwordEnv" -}}
{{- if .Values.postgresql.enabled -}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "sematic-k8s.postgresql.secretName" . }}
      key: {{ include "sematic-k8s.postgresql.secretKey" . }}
{{- end -}}
{{- end -}}

{{/* The database URL when the chart stores it (bundled PostgreSQL, whose password comes as PGPASSWORD, or
database.external.url). */}}
{{- define "sematic-k8s.database.url" -}}
{{- if .Values.postgresql.enabled -}}
{{- $auth := .Values.postgresql.auth -}}
{{- printf "postgresql+psycopg://%s@%s:5432/%s" (urlquery $auth.username) (include "sematic-k8s.postgresql.fullname" .) $auth.database -}}
{{- else -}}
{{- .Values.database.external.url -}}
{{- end -}}
{{- end -}}

{{/* -- Reruns -------------------------------------------------------------------------------------- */}}

{{/* "true" when the value is a number (a values file's: float64; --set's: int64), else empty. */}}
{{- define "sematic-k8s.isNumber" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}true{{- end -}}
{{- end -}}

{{- define "sematic-k8s.server.validate" -}}
{{- if not (has .Values.server.rerunLauncher (list "" "kubernetes")) -}}
{{- fail (printf "server.rerunLauncher must be \"kubernetes\" or \"\" (no reruns), not %q: the docker launcher is for a developer's machine (sematic-k8s server --allow-docker)" .Values.server.rerunLauncher) -}}
{{- end -}}
{{- if not (has (.Values.server.actionsBy | default "team") (list "team" "owner")) -}}
{{- fail (printf "server.actionsBy must be \"team\" (any user key acts on any resolution) or \"owner\" (a user key on its own), not %q" .Values.server.actionsBy) -}}
{{- end -}}
{{- with .Values.server.database -}}
{{- if or (not (include "sematic-k8s.isNumber" .poolSize)) (lt (float64 .poolSize) 1.0) (ne (float64 .poolSize) (floor .poolSize)) -}}
{{- fail (printf "server.database.poolSize must be a whole number of connections >= 1, not %v: set one (the default is 50)" .poolSize) -}}
{{- end -}}
{{- if or (not (include "sematic-k8s.isNumber" .poolTimeoutSeconds)) (le (float64 .poolTimeoutSeconds) 0.0) (ge (float64 .poolTimeoutSeconds) 60.0) -}}
{{- fail (printf "server.database.poolTimeoutSeconds must be above 0 and below 60, the clients' request timeout (its 503 would come after they sent the request again), not %v: set one (the default is 20)" .poolTimeoutSeconds) -}}
{{- end -}}
{{- if or (not (include "sematic-k8s.isNumber" .lockTimeoutSeconds)) (lt (float64 .lockTimeoutSeconds) 0.0) -}}
{{- fail (printf "server.database.lockTimeoutSeconds must be a number of seconds >= 0 (0: as long as a lock is held), not %v: set one (the default is 20)" .lockTimeoutSeconds) -}}
{{- end -}}
{{- if not (has .pooler (list "none" "transaction")) -}}
{{- fail (printf "server.database.pooler must be \"none\" (PostgreSQL itself, or a session-pooling PgBouncer) or \"transaction\" (PgBouncer's transaction pooling), not %q" (toString .pooler)) -}}
{{- end -}}
{{- end -}}
{{- if lt (int (include "sematic-k8s.server.shutdownTimeout" .)) 1 -}}
{{- fail (printf "server.terminationGracePeriodSeconds (%v) must be at least server.shutdownDelaySeconds (%v) + 6: the server needs the rest, less 5 s, to finish the requests under way when it stops" .Values.server.terminationGracePeriodSeconds .Values.server.shutdownDelaySeconds) -}}
{{- end -}}
{{- end -}}

{{/* Seconds the stopping server gives the requests under way (--shutdown-timeout): the pod's grace period less the
preStop delay, and 5 s to spare before the kubelet's SIGKILL. */}}
{{- define "sematic-k8s.server.shutdownTimeout" -}}
{{- sub (sub (int .Values.server.terminationGracePeriodSeconds) (int .Values.server.shutdownDelaySeconds)) 5 -}}
{{- end -}}

{{/* "true" when the server pods need a Kubernetes API token: they start rerun drivers as Jobs. */}}
{{- define "sematic-k8s.server.automountToken" -}}
{{- or .Values.server.serviceAccount.automountToken (eq .Values.server.rerunLauncher "kubernetes") (not (empty .Values.server.tokenSweepNamespaces)) -}}
{{- end -}}

{{/* -- Artifacts (S3 / MinIO) ---------------------------------------------------------------------- */}}

{{- define "sematic-k8s.minio.fullname" -}}
{{- printf "%s-minio" (include "sematic-k8s.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sematic-k8s.minio.rootUser" -}}
{{- default "sematic-k8s" .Values.minio.rootUser -}}
{{- end -}}

{{/* "true" when the secrets hook generates MinIO's root password (the S3 credentials' Secrets). */}}
{{- define "sematic-k8s.minio.generated" -}}
{{- if and .Values.minio.enabled (not .Values.minio.rootPassword) (not .Values.artifacts.s3.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{/* The S3 endpoint as seen from inside the cluster; empty means AWS. */}}
{{- define "sematic-k8s.s3.endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "http://%s.%s.svc:9000" (include "sematic-k8s.minio.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- .Values.artifacts.s3.endpoint -}}
{{- end -}}
{{- end -}}

{{/* "true" when the chart stores S3 credentials in Secrets of its own. */}}
{{- define "sematic-k8s.s3.chartCredentials" -}}
{{- if and (not .Values.artifacts.s3.existingSecret) (or .Values.minio.enabled .Values.artifacts.s3.accessKeyId) -}}
true
{{- end -}}
{{- end -}}

{{/* The Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for the server (release namespace);
empty when the pods' own identity is used. */}}
{{- define "sematic-k8s.s3.serverSecretName" -}}
{{- if .Values.artifacts.s3.existingSecret -}}
{{- .Values.artifacts.s3.existingSecret -}}
{{- else if include "sematic-k8s.s3.chartCredentials" . -}}
{{- printf "%s-s3" (include "sematic-k8s.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The same Secret for drivers and workers (run namespace); empty when there is none. */}}
{{- define "sematic-k8s.s3.runSecretName" -}}
{{- if .Values.artifacts.s3.existingSecret -}}
{{- .Values.artifacts.s3.existingSecret -}}
{{- else if include "sematic-k8s.s3.chartCredentials" . -}}
{{- .Values.runs.s3SecretName -}}
{{- end -}}
{{- end -}}

{{/* The S3 credentials the chart stores, as Secret stringData (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). */}}
{{- define "sematic-k8s.s3.credentials" -}}
{{- if .Values.minio.enabled -}}
AWS_ACCESS_KEY_ID: {{ include "sematic-k8s.minio.rootUser" . | quote }}
AWS_SECRET_ACCESS_KEY: {{ .Values.minio.rootPassword | quote }}
{{- else -}}
AWS_ACCESS_KEY_ID: {{ .Values.artifacts.s3.accessKeyId | quote }}
AWS_SECRET_ACCESS_KEY: {{ required "artifacts.s3.secretAccessKey is required with artifacts.s3.accessKeyId" .Values.artifacts.s3.secretAccessKey | quote }}
{{- end -}}
{{- end -}}

{{/* The storage URL drivers and workers use: s3://bucket[/prefix] (endpoint and region come from env). */}}
{{- define "sematic-k8s.storageUrl" -}}
{{- $bucket := required "artifacts.bucket is required" .Values.artifacts.bucket -}}
{{- with trimAll "/" .Values.artifacts.prefix -}}
{{- printf "s3://%s/%s" $bucket . -}}
{{- else -}}
{{- printf "s3://%s" $bucket -}}
{{- end -}}
{{- end -}}

{{/* Environment variables for S3 access (server, its bucket init container). Call with the root context. */}}
{{- define "sematic-k8s.s3.env" -}}
- name: SEMATIC_K8S_STORAGE
  value: {{ include "sematic-k8s.storageUrl" . | quote }}
- name: SEMATIC_K8S_S3_BUCKET
  value: {{ .Values.artifacts.bucket | quote }}
- name: SEMATIC_K8S_S3_PREFIX
  value: {{ trimAll "/" .Values.artifacts.prefix | quote }}
{{- with include "sematic-k8s.s3.endpoint" . }}
- name: SEMATIC_K8S_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.artifacts.s3.region }}
- name: SEMATIC_K8S_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- with include "sematic-k8s.s3.serverSecretName" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end -}}

{{/* -- Migration hook ------------------------------------------------------------------------------ */}}

{{/* When the migration Job (and the Secret it reads) run: before the install when the database already
exists (external); after it with the bundled PostgreSQL, which the install itself creates. Always before
upgrades, so a new server version never starts on an old schema. */}}
{{- define "sematic-k8s.migrations.hook" -}}
{{- if .Values.postgresql.enabled -}}
post-install,pre-upgrade
{{- else -}}
pre-install,pre-upgrade
{{- end -}}
{{- end -}}

{{- define "sematic-k8s.migrations.secretName" -}}
{{- printf "%s-migrations" (include "sematic-k8s.fullname" .) -}}
{{- end -}}

{{/* "true" when the migration hook needs its own Secret (a URL the chart stores). */}}
{{- define "sematic-k8s.migrations.needsSecret" -}}
{{- if not .Values.database.external.existingSecret -}}
true
{{- end -}}
{{- end -}}

{{/* Pod security settings shared by the chart's Python Jobs (the server image). */}}
{{- define "sematic-k8s.jobPodSecurityContext" -}}
{{- toYaml .Values.server.podSecurityContext -}}
{{- end -}}
