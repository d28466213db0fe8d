{{- define "replaywatch.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "replaywatch.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "replaywatch.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "replaywatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "replaywatch.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "replaywatch.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The environment every replaywatch container shares: the ConfigMap (secrets are files). */}}
{{- define "replaywatch.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "replaywatch.fullname" . }}
{{- end -}}

{{- define "replaywatch.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- if .Values.secrets.existingSecret }}
  - name: secrets
    mountPath: /var/run/secrets/replaywatch
    readOnly: true
{{- end }}
{{- if .Values.tls.existingSecret }}
  - name: tls
    mountPath: /etc/replaywatch/tls
    readOnly: true
{{- end }}
{{- end -}}

{{- define "replaywatch.volumes" -}}
volumes:
  - name: tmp
    emptyDir: {}
{{- if .Values.secrets.existingSecret }}
  - name: secrets
    secret:
      secretName: {{ .Values.secrets.existingSecret }}
{{- end }}
{{- if .Values.tls.existingSecret }}
  - name: tls
    secret:
      secretName: {{ .Values.tls.existingSecret }}
{{- end }}
{{- end -}}

{{- define "replaywatch.pod" -}}
serviceAccountName: {{ include "replaywatch.serviceAccountName" . }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
